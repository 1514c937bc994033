-- When each scheduled orchestration fires next. A node fires a schedule by
-- moving `next_fire_at` forward conditionally, so across nodes each firing
-- happens once.
CREATE TABLE schedules (
    orchestration_id  TEXT PRIMARY KEY REFERENCES orchestrations(id) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL,
    cron              TEXT NOT NULL,
    next_fire_at      BIGINT NOT NULL,
    last_fire_at      BIGINT
);
