-- Records that failed CDM validation inside an orchestration (`map_to_cdm` /
-- `map_from_cdm` with `on_invalid: dead_letter`): the record, its domain and
-- every rule it broke, for a person to inspect and discard.
CREATE TABLE dead_letter_items (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    execution_id      TEXT NOT NULL,
    orchestration_id  TEXT NOT NULL,
    step_path         TEXT NOT NULL,
    domain            TEXT NOT NULL,
    -- `inbound` (native → CDM) or `outbound` (CDM → native)
    direction         TEXT NOT NULL,
    record            TEXT NOT NULL,
    problems          TEXT NOT NULL,
    -- `open` or `discarded`
    status            TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX dead_letter_items_by_tenant ON dead_letter_items (tenant_id, id);
