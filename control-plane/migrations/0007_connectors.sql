-- Connector definitions. A connector starts as a draft owned by one tenant
-- (visible to that tenant only); publishing (later) freezes versions.
CREATE TABLE connectors (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    slug         TEXT NOT NULL,
    name         TEXT NOT NULL,
    category     TEXT NOT NULL,
    status       TEXT NOT NULL,
    definition   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, slug)
);
