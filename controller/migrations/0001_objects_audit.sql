-- sluice controller schema, version 1: the organisation's objects, the
-- audit log, counters and the token-signing keys.
--
-- Portable SQL: the same file runs on SQLite and PostgreSQL. No
-- auto-increment (identifiers are made by the controller), no booleans
-- (BIGINT 0/1), no binary columns (text), times in Unix seconds.

-- Counters and switches, one row each: `revision` (the policy revision,
-- bumped by every change to a policy object), `audit_seq` (the audit log's
-- sequence, bumped by every audited write), `maintenance` (value 1 while
-- read-only; text says why).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL,
    text TEXT
);
INSERT INTO meta (key, value, text) VALUES ('revision', 0, NULL);
INSERT INTO meta (key, value, text) VALUES ('audit_seq', 0, NULL);
INSERT INTO meta (key, value, text) VALUES ('maintenance', 0, NULL);

-- Every object of every kind: its body is the JSON of the kind's type.
CREATE TABLE objects (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, name)
);

-- The audit log: written in the transaction of the change it describes,
-- never updated.
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    object_name TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    revision BIGINT NOT NULL
);
CREATE INDEX audit_object ON audit (kind, object_id);
CREATE INDEX audit_actor ON audit (actor);

-- API clients' secrets: argon2id hashes (PHC strings), each with its
-- expiry. The plain secret is shown once and never stored.
CREATE TABLE client_secrets (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX client_secrets_client ON client_secrets (client_id);

-- Each controller's token-signing public key (Ed25519, base64url of the
-- 32 raw bytes): any controller verifies any other's tokens by `kid`. The
-- private key stays in its controller's state directory (0600).
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
