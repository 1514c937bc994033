-- Connectors' circuit breakers and rate limits, enforced per connection and
-- shared by every control-plane replica.

-- A breaker opened by any replica (open_until_ms > now) is open on all of
-- them within a second; 0 means closed. updated_at_ms orders the changes.
CREATE TABLE connection_breakers (
    connection_id  TEXT PRIMARY KEY,
    open_until_ms  BIGINT NOT NULL,
    failures       BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX connection_breakers_by_update ON connection_breakers (updated_at_ms);

-- The theoretical arrival time (GCRA, Unix microseconds) of the next call of
-- a rate-limited connection, when replicas share a PostgreSQL database.
CREATE TABLE connection_pacing (
    connection_id  TEXT PRIMARY KEY,
    tat_us         BIGINT NOT NULL
);
