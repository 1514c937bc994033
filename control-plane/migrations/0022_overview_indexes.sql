-- The console's dashboard counts a tenant's executions of today and API
-- calls of the last 24 hours: by tenant and time, not by scanning ids.
CREATE INDEX executions_by_tenant_time ON executions (tenant_id, created_at);
CREATE INDEX api_calls_by_tenant_time ON api_calls (tenant_id, at);
