-- People who sign in with an email and a password. A session is an API
-- token row linked to its user: the user's current role and state apply.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);

CREATE INDEX users_by_tenant ON users (tenant_id, id);

ALTER TABLE api_tokens ADD COLUMN user_id TEXT;
