-- The publishing lifecycle of connectors: scopes, frozen versions, review
-- and deprecation; and the platform switch for enterprise publishing.

-- `draft`, `published` or `deprecated`; the scope is set when first published.
ALTER TABLE connectors ADD COLUMN scope TEXT;
-- The newest frozen version (`1.4.0`), NULL until first published.
ALTER TABLE connectors ADD COLUMN latest_version TEXT;
-- `pending` or `rejected` while an enterprise asks for the global catalogue.
ALTER TABLE connectors ADD COLUMN review_status TEXT;
ALTER TABLE connectors ADD COLUMN review_reason TEXT;
ALTER TABLE connectors ADD COLUMN deprecated_until BIGINT;
ALTER TABLE connectors ADD COLUMN deprecation_message TEXT;

-- Immutable published versions. The catalogue shows each connector's newest.
CREATE TABLE connector_versions (
    connector_id   TEXT NOT NULL REFERENCES connectors(id),
    version        TEXT NOT NULL,
    major          BIGINT NOT NULL,
    minor          BIGINT NOT NULL,
    patch          BIGINT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    category       TEXT NOT NULL,
    -- Space-separated and space-padded (` api_key basic `), for search.
    auth_types     TEXT NOT NULL,
    icon           TEXT,
    operations     BIGINT NOT NULL,
    definition     TEXT NOT NULL,
    bump           TEXT NOT NULL,
    breaking       BIGINT NOT NULL,
    -- JSON list of the computed changes against the previous version.
    changes        TEXT NOT NULL,
    release_notes  TEXT NOT NULL,
    published_by   TEXT NOT NULL,
    published_at   BIGINT NOT NULL,
    PRIMARY KEY (connector_id, version)
);

-- 1 when the platform lets this tenant publish enterprise-scoped connectors.
ALTER TABLE tenants ADD COLUMN enterprise_publishing BIGINT NOT NULL DEFAULT 0;
