-- Single sign-on per tenant with the enterprise's own OpenID Connect
-- provider. The client secret is sealed by the vault; the email domains
-- that sign in through a tenant's provider are unique across tenants, so an
-- email's domain finds its provider.
CREATE TABLE tenant_sso (
    tenant_id      TEXT PRIMARY KEY,
    issuer         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    client_secret  TEXT NOT NULL,
    default_role   TEXT,
    enabled        BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE TABLE sso_domains (
    domain     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL
);
CREATE INDEX sso_domains_by_tenant ON sso_domains (tenant_id);

-- Sign-ins on their way through a provider: the state's hash, with the
-- PKCE verifier and nonce they must come back with; single use, and only
-- for ten minutes.
CREATE TABLE sso_logins (
    state_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    verifier    TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    next_path   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX sso_logins_by_time ON sso_logins (created_at);
