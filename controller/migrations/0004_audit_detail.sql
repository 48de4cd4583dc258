-- sluice controller schema, version 4: what an audit entry's extras did
-- (which secret was added or removed, which certificate was issued), which
-- the object before and after do not show.
ALTER TABLE audit ADD COLUMN detail TEXT;
