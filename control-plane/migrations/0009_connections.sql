-- Connections: one enterprise's configured link to one external system,
-- made from a published connector version; their sealed credentials, health
-- history, and the API-call log.
CREATE TABLE connections (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants(id),
    connector_id         TEXT NOT NULL REFERENCES connectors(id),
    connector_version    TEXT NOT NULL,
    connector_slug       TEXT NOT NULL,
    name                 TEXT NOT NULL,
    auth_type            TEXT NOT NULL,
    -- Overrides the connector's base URL (sandbox, production, region).
    base_url             TEXT,
    -- JSON: timeout_ms, retry_on_failure, max_retries, log_level, tls.
    settings             TEXT NOT NULL,
    -- `cloud`, `agent_group` or `proxy`.
    execution_mode       TEXT NOT NULL,
    agent_group_id       TEXT,
    proxy_url            TEXT,
    -- `inactive` or `active`.
    status               TEXT NOT NULL,
    -- `unchecked`, `healthy`, `degraded` or `offline`.
    health               TEXT NOT NULL,
    health_checked_at    BIGINT,
    -- Bumped on every credential change (names the agents' token cache entry).
    credentials_version  BIGINT NOT NULL,
    created_by           TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Credential fields, each sealed by the vault with (tenant, connection, field)
-- as associated data.
CREATE TABLE connection_secrets (
    connection_id  TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    field          TEXT NOT NULL,
    sealed         TEXT NOT NULL,
    PRIMARY KEY (connection_id, field)
);

CREATE TABLE connection_health (
    connection_id  TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    at             BIGINT NOT NULL,
    status         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    detail         TEXT NOT NULL,
    duration_ms    BIGINT NOT NULL
);
CREATE INDEX connection_health_by_connection ON connection_health (connection_id, at);

-- Every connector call. The connection may be deleted later: its name stays.
CREATE TABLE api_calls (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    connection_id   TEXT NOT NULL,
    connector_id    TEXT NOT NULL,
    connection_name TEXT NOT NULL,
    connector_slug  TEXT NOT NULL,
    operation       TEXT NOT NULL,
    method          TEXT NOT NULL,
    url             TEXT NOT NULL,
    status          BIGINT,
    ok              BIGINT NOT NULL,
    error_class     TEXT,
    duration_us     BIGINT NOT NULL,
    response_bytes  BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    ran_on          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    at              BIGINT NOT NULL
);
CREATE INDEX api_calls_by_tenant ON api_calls (tenant_id, id);
CREATE INDEX api_calls_by_connection ON api_calls (connection_id, at);
CREATE INDEX api_calls_by_connector ON api_calls (connector_id, at);

-- Per-connection roles: `admin` (manage it) or an HTTP verb its operations
-- use (invoke those). Subjects are `user:usr_…` or `token:tok_…`.
CREATE TABLE connection_grants (
    connection_id  TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    subject        TEXT NOT NULL,
    role           TEXT NOT NULL,
    PRIMARY KEY (connection_id, subject, role)
);

-- What an enterprise should know (a new major version of a connector its
-- connections use, ...), newest first.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    details     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    read_at     BIGINT
);
CREATE INDEX notifications_by_tenant ON notifications (tenant_id, id);
