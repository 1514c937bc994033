-- Results of creating POSTs sent with an Idempotency-Key, kept 24 hours.
-- status 0 marks a request still in progress; responses are sealed by the
-- vault because they may hold secrets shown once (tokens).
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    fingerprint  TEXT NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
