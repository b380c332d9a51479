-- Keyward's initial schema, SQLite flavour (migrations/postgres/0001_initial.sql is its twin).
-- Timestamps are RFC 3339 UTC text of one fixed width (microseconds, `Z`), so that text order
-- is time order in comparisons and indexes; lists and maps are JSON text; booleans are 0/1.

-- The configured accounts, kept so reports can name them.
CREATE TABLE accounts (
    id      TEXT NOT NULL PRIMARY KEY,
    name    TEXT NOT NULL,
    regions TEXT NOT NULL DEFAULT '[]'          -- JSON array of region names
) STRICT;

-- One row per KMS key ever seen. Never deleted: a key gone from a complete listing gets
-- deleted_at, and is revived in place if it comes back.
CREATE TABLE keys (
    arn              TEXT    NOT NULL PRIMARY KEY,
    account_id       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    key_id           TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    key_manager      TEXT    NOT NULL,          -- CUSTOMER | AWS
    key_state        TEXT    NOT NULL,
    key_spec         TEXT    NOT NULL,
    key_usage        TEXT    NOT NULL,
    origin           TEXT    NOT NULL,
    multi_region     INTEGER NOT NULL CHECK (multi_region IN (0, 1)),
    creation_date    TEXT,
    deletion_date    TEXT,
    rotation_enabled INTEGER CHECK (rotation_enabled IN (0, 1)),
    aliases          TEXT    NOT NULL,          -- JSON array of alias names
    tags             TEXT    NOT NULL,          -- JSON object tag key -> value
    grants           TEXT    NOT NULL,          -- JSON array of grants
    fingerprint      TEXT    NOT NULL,          -- SHA-256 of the metadata findings depend on
    evaluation       TEXT    NOT NULL,          -- rule-set version + context of the findings
    -- The newest readable policy version; kept while the policy is unreadable.
    policy_sha256    TEXT,
    -- Why the policy could not be read at the last sync; NULL when it was read.
    policy_error     TEXT,
    remediable       INTEGER NOT NULL CHECK (remediable IN (0, 1)),
    first_seen       TEXT    NOT NULL,
    last_seen        TEXT    NOT NULL,
    deleted_at       TEXT
) STRICT;

-- Per account·region work (change detection, deletion, API filters) and cursor pages by ARN.
CREATE INDEX keys_account_region_arn ON keys (account_id, region, arn);
-- Live keys in ARN order, the default listing.
CREATE INDEX keys_live_arn ON keys (arn) WHERE deleted_at IS NULL;

-- Every distinct policy text a key has had, in order; A -> B -> A is three rows.
CREATE TABLE policy_versions (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_arn    TEXT    NOT NULL REFERENCES keys (arn),
    sha256     TEXT    NOT NULL,
    text       TEXT    NOT NULL,                -- exactly as GetKeyPolicy returned it
    first_seen TEXT    NOT NULL,
    last_seen  TEXT    NOT NULL
) STRICT;

CREATE INDEX policy_versions_key ON policy_versions (key_arn, id);

-- One row per (key, rule, locator), reopened in place when it fires again.
CREATE TABLE findings (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_arn         TEXT    NOT NULL REFERENCES keys (arn),
    rule_id         TEXT    NOT NULL,
    locator         TEXT    NOT NULL,
    severity        TEXT    NOT NULL,
    -- 'waived' is reserved for the waiver feature; the sync writes open and resolved only.
    status          TEXT    NOT NULL CHECK (status IN ('open', 'resolved', 'waived')),
    statement_index INTEGER,
    sid             TEXT,
    message         TEXT    NOT NULL,
    policy_sha256   TEXT,                       -- evidence: the version it was judged on
    first_seen      TEXT    NOT NULL,
    last_seen       TEXT    NOT NULL,
    resolved_at     TEXT,
    UNIQUE (key_arn, rule_id, locator)
) STRICT;

-- Filters by rule and severity, and the per-rule counts of metrics and the dashboard.
CREATE INDEX findings_status_rule ON findings (status, rule_id, severity);
CREATE INDEX findings_status_severity ON findings (status, severity);

-- One row per account·region pass.
CREATE TABLE sync_runs (
    id                    INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    account_id            TEXT    NOT NULL,
    region                TEXT    NOT NULL,
    started_at            TEXT    NOT NULL,
    finished_at           TEXT,
    status                TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    keys_seen             INTEGER NOT NULL DEFAULT 0,
    keys_changed          INTEGER NOT NULL DEFAULT 0,
    policy_versions_added INTEGER NOT NULL DEFAULT 0,
    findings_opened       INTEGER NOT NULL DEFAULT 0,
    findings_resolved     INTEGER NOT NULL DEFAULT 0,
    keys_deleted          INTEGER NOT NULL DEFAULT 0,
    error                 TEXT
) STRICT;

CREATE INDEX sync_runs_account_region ON sync_runs (account_id, region, id);
-- The dashboard's trend over time.
CREATE INDEX sync_runs_started ON sync_runs (started_at);

-- Who is syncing an account·region right now, and when it last finished.
CREATE TABLE sync_leases (
    account_id       TEXT NOT NULL,
    region           TEXT NOT NULL,
    owner            TEXT,
    lease_until      TEXT,
    last_finished_at TEXT,
    PRIMARY KEY (account_id, region)
) STRICT;
