-- Tenant status and quota plan, and monthly call counters.

ALTER TABLE tenants ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE tenants ADD COLUMN tier TEXT NOT NULL DEFAULT 'standard';
-- Custom values override the tier's; NULL means "the tier's value".
ALTER TABLE tenants ADD COLUMN calls_per_month BIGINT;
ALTER TABLE tenants ADD COLUMN requests_per_minute BIGINT;

CREATE TABLE usage_counters (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    period     TEXT NOT NULL,
    calls      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, period)
);
