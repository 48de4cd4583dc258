-- sluice controller schema, version 7: an administrator's failed sign-ins
-- in a row, and until when the account is locked after too many (shared by
-- every controller of the store, unlike their rate limits).
ALTER TABLE admins ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE admins ADD COLUMN locked_until BIGINT NOT NULL DEFAULT 0;
