-- Which control-plane node runs an execution, until when: nodes renew the
-- leases of what they run; an execution whose lease ran out (its node
-- stopped) is taken over by another. Running executions with a live lease
-- count against the tenant's concurrency on every node.
ALTER TABLE executions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN lease_until BIGINT;
CREATE INDEX executions_by_tenant_status ON executions (tenant_id, status);
