-- Tenants, API tokens, agent groups, enrollment tokens and agents.
-- Times are seconds since the Unix epoch (portable between SQLite and PostgreSQL).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE TABLE agent_groups (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE enrollment_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    group_id     TEXT NOT NULL REFERENCES agent_groups(id),
    secret_hash  TEXT NOT NULL UNIQUE,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    agent_id     TEXT,
    created_at   BIGINT NOT NULL
);

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    group_id         TEXT NOT NULL REFERENCES agent_groups(id),
    name             TEXT NOT NULL,
    hostname         TEXT NOT NULL DEFAULT '',
    version          TEXT NOT NULL DEFAULT '',
    enrolled_at      BIGINT NOT NULL,
    last_seen        BIGINT,
    cert_not_after   BIGINT NOT NULL,
    revoked_at       BIGINT
);

CREATE INDEX agents_by_group ON agents (tenant_id, group_id);
CREATE INDEX enrollment_tokens_by_group ON enrollment_tokens (tenant_id, group_id);
