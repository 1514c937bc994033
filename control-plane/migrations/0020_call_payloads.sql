-- Request and response bodies of logged calls, size-capped, with sensitive
-- personal values masked. Kept for less time than the call records
-- themselves (see quotas::apply_retention).
CREATE TABLE api_call_payloads (
    call_id             TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    request_body        TEXT,
    response_body       TEXT,
    request_truncated   BIGINT NOT NULL,
    response_truncated  BIGINT NOT NULL,
    at                  BIGINT NOT NULL
);
CREATE INDEX api_call_payloads_by_tenant ON api_call_payloads (tenant_id, at);
CREATE INDEX api_calls_by_tenant_at ON api_calls (tenant_id, at);
