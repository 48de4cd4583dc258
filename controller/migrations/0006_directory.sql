-- sluice controller schema, version 6: directory group sync's status (one
-- row), which also holds the lease that lets one controller of a shared
-- store sync at a time.
CREATE TABLE directory_sync (
    key TEXT PRIMARY KEY,
    last_started BIGINT,
    last_finished BIGINT,
    last_ok BIGINT,
    last_result TEXT,
    groups_count BIGINT NOT NULL,
    users_count BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    requested BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
INSERT INTO directory_sync (key, groups_count, users_count, next_at, requested, lease_until) VALUES ('directory', 0, 0, 0, 0, 0);
