-- Tenants' data keys, wrapped by the master key (base64). Secrets sealed
-- under them live with their owners (connections, later).
CREATE TABLE tenant_keys (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id),
    wrapped_key    TEXT NOT NULL,
    master_key_id  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
