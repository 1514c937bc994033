-- Webhook deliveries already received (a digest of the signature, or of the
-- sender's delivery id), kept until their timestamp leaves the tolerance
-- window, so a replayed request is refused on every replica.
CREATE TABLE webhook_deliveries (
    orchestration_id  TEXT NOT NULL,
    digest            TEXT NOT NULL,
    received_at       BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    PRIMARY KEY (orchestration_id, digest)
);
CREATE INDEX webhook_deliveries_expiry ON webhook_deliveries (expires_at);
