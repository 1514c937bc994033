-- The console's dashboard counts a tenant's executions of today by status
-- and its API calls of the last 24 hours: from indexes that hold what is
-- counted, not by reading every row.
CREATE INDEX executions_by_tenant_time ON executions (tenant_id, created_at, status);
CREATE INDEX api_calls_by_tenant_time ON api_calls (tenant_id, at, ok);
