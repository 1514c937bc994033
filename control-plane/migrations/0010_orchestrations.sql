-- Orchestrations and their versions: every save is a new version; an
-- execution pins the version it started on.
CREATE TABLE orchestrations (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    -- `draft`, `active`, `paused` or `archived`.
    status          TEXT NOT NULL,
    latest_version  BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE orchestration_versions (
    orchestration_id  TEXT NOT NULL REFERENCES orchestrations(id) ON DELETE CASCADE,
    version           BIGINT NOT NULL,
    definition        TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (orchestration_id, version)
);
