-- The `view_pii` permission given to or taken from one user or API token:
-- NULL follows the role (enterprise_admin and operator have it, viewer not),
-- 1 grants it, 0 withholds it.
ALTER TABLE users ADD COLUMN view_pii BIGINT;
ALTER TABLE api_tokens ADD COLUMN view_pii BIGINT;
