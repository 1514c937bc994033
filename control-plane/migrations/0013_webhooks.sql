-- Webhook trigger secrets, sealed by the vault (shown once when created).
CREATE TABLE webhook_secrets (
    orchestration_id  TEXT PRIMARY KEY REFERENCES orchestrations(id) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL,
    sealed            TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
