-- Executions of orchestrations and their step records. Every step's start
-- and outcome is written before the engine moves on, so a restarted control
-- plane resumes running executions after their last completed step.
CREATE TABLE executions (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    orchestration_id  TEXT NOT NULL,
    orchestration_name TEXT NOT NULL,
    version           BIGINT NOT NULL,
    -- queued, running, succeeded, partially_succeeded, failed, cancelled
    status            TEXT NOT NULL,
    parameters        TEXT NOT NULL,
    output            TEXT,
    error             TEXT,
    trigger_type      TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    -- The execution this one re-runs, if any.
    rerun_of          TEXT,
    -- Dead-letter state of a failed execution: `open`, `replayed` or `discarded`.
    dead_letter       TEXT
);
-- Executions a tenant may run at once (NULL: its tier's).
ALTER TABLE tenants ADD COLUMN concurrent_executions BIGINT;

CREATE INDEX executions_by_tenant ON executions (tenant_id, id);
CREATE INDEX executions_by_status ON executions (status, id);

CREATE TABLE execution_steps (
    execution_id  TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    -- Where the step is, e.g. `steps[2].then[0]` or `steps[3].steps[0]#7` (foreach item 7).
    path          TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    step_id       TEXT NOT NULL,
    step_type     TEXT NOT NULL,
    -- running, succeeded, failed, skipped
    status        TEXT NOT NULL,
    input         TEXT,
    output        TEXT,
    error         TEXT,
    attempts      BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    duration_ms   BIGINT,
    PRIMARY KEY (execution_id, path)
);
