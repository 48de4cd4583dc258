-- sluice controller schema, version 3: each token-signing key names the
-- issuer (the controller's URL) its tokens carry, so that controllers with
-- different URLs on one store accept each other's tokens and nothing else.
ALTER TABLE signing_keys ADD COLUMN issuer TEXT;
