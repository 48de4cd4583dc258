-- sluice controller schema, version 5: the portal's administrators and
-- their sessions.

-- An administrator: a role (read or full), an argon2id password hash, and
-- a TOTP secret (RFC 6238) sealed with AES-256-GCM under a key derived
-- from the CA's key (controllers that share a store share the CA), with
-- the last time step a code was accepted for (a code is good once).
CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_sealed TEXT NOT NULL,
    totp_last_step BIGINT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Sessions: the SHA-256 of the cookie's 256-bit token (the token is only
-- in the browser), the form token every POST must carry, an absolute
-- expiry one hour after sign-in.
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX admin_sessions_admin ON admin_sessions (admin_id);
