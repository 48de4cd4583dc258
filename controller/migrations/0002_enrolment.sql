-- sluice controller schema, version 2: enrolment, the certificates the CA
-- issued, and what each gateway and edge last reported.

-- One-time enrolment tokens: the SHA-256 of a 256-bit random token (the
-- token itself is shown once), for one gateway or edge, until it expires
-- or is used.
CREATE TABLE enrolments (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX enrolments_object ON enrolments (kind, object_id);

-- Certificates issued at enrolment (from the node's own signing request:
-- its key never left it). A revoked one is refused at once by the
-- controller and, from their next revision, by the edges.
CREATE TABLE certificates (
    fingerprint TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    name TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX certificates_object ON certificates (kind, object_id);

-- The last report of each gateway and edge (telemetry, not a change: not
-- audited, accepted during maintenance).
CREATE TABLE node_status (
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    last_contact BIGINT NOT NULL,
    applied_revision BIGINT NOT NULL,
    version TEXT NOT NULL,
    report TEXT NOT NULL,
    controller TEXT NOT NULL,
    PRIMARY KEY (kind, object_id)
);
