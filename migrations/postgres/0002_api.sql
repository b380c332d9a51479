-- The REST API: bearer tokens and the audit log, plus indexes for the API's filters
-- (migrations/sqlite/0002_api.sql is its twin).

-- API tokens: only the SHA-256 (lower-case hex) of the secret is stored. Rows are never
-- deleted, so the audit log's actors stay resolvable; revocation stamps revoked_at once.
CREATE TABLE api_tokens (
    id           BIGSERIAL   NOT NULL PRIMARY KEY,
    name         TEXT        COLLATE "C" NOT NULL UNIQUE,
    sha256       TEXT        COLLATE "C" NOT NULL UNIQUE,
    role         TEXT        NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
    created_at   TIMESTAMPTZ NOT NULL,
    -- Stamped at most once a minute, so authenticating stays a read on most requests.
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- The append-only audit log, one hash chain in id order: hash = SHA-256 over prev_hash and the
-- entry's fields (store::audit_hash); the first entry's prev_hash is 64 zeros. Appenders
-- serialise on a transaction-scoped advisory lock; prev_hash is unique besides, so two appends
-- can never chain to the same entry (the chain cannot fork).
CREATE TABLE audit_events (
    id        BIGSERIAL   NOT NULL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,             -- microseconds, as hashed
    actor     TEXT        NOT NULL,
    action    TEXT        NOT NULL,
    target    TEXT        NOT NULL,
    detail    TEXT        NOT NULL,             -- canonical JSON text, hashed byte for byte
    prev_hash TEXT        COLLATE "C" NOT NULL UNIQUE,
    hash      TEXT        NOT NULL
);

-- A key's open findings: the open-finding counts of key rows and the rule, severity and
-- compliance filters of the key list.
CREATE INDEX findings_key_status ON findings (key_arn, status, rule_id, severity);
-- `{key}` in API paths may be a key id (a multi-Region key id names one key per Region).
CREATE INDEX keys_key_id ON keys (key_id);
