-- Limits shared by every control-plane replica, storage accounting and retention.

-- Custom storage limit (bytes) and retention (days); NULL means "the tier's".
ALTER TABLE tenants ADD COLUMN storage_bytes BIGINT;
ALTER TABLE tenants ADD COLUMN retention_days BIGINT;

-- API requests per tenant per minute window, one row per replica: each node
-- adds its own counts and reads the others', so the request rate is one
-- budget across replicas. Rows older than two minutes are pruned.
CREATE TABLE rate_windows (
    tenant_id     TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    node_id       TEXT NOT NULL,
    requests      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, window_start, node_id)
);
CREATE INDEX rate_windows_by_window ON rate_windows (window_start);

-- The stored size of each tenant's data, measured periodically.
CREATE TABLE storage_usage (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants(id),
    bytes        BIGINT NOT NULL,
    measured_at  BIGINT NOT NULL
);
