-- Keyward's initial schema, Postgres flavour (migrations/sqlite/0001_initial.sql is its twin).
-- Identifiers sort with COLLATE "C" (byte order, as in SQLite), so that listings and cursor
-- pages come out in the same order on both backends whatever the server's locale.

-- The configured accounts, kept so reports can name them.
CREATE TABLE accounts (
    id      TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    name    TEXT   NOT NULL,
    regions TEXT[] NOT NULL DEFAULT '{}'
);

-- One row per KMS key ever seen. Never deleted: a key gone from a complete listing gets
-- deleted_at, and is revived in place if it comes back.
CREATE TABLE keys (
    arn              TEXT        COLLATE "C" NOT NULL PRIMARY KEY,
    account_id       TEXT        COLLATE "C" NOT NULL,
    region           TEXT        COLLATE "C" NOT NULL,
    key_id           TEXT        NOT NULL,
    description      TEXT        NOT NULL,
    key_manager      TEXT        NOT NULL,      -- CUSTOMER | AWS
    key_state        TEXT        NOT NULL,
    key_spec         TEXT        NOT NULL,
    key_usage        TEXT        NOT NULL,
    origin           TEXT        NOT NULL,
    multi_region     BOOLEAN     NOT NULL,
    creation_date    TIMESTAMPTZ,
    deletion_date    TIMESTAMPTZ,
    rotation_enabled BOOLEAN,
    aliases          TEXT[]      NOT NULL,
    tags             JSONB       NOT NULL,      -- object tag key -> value
    grants           JSONB       NOT NULL,      -- array of grants
    fingerprint      TEXT        NOT NULL,      -- SHA-256 of the metadata findings depend on
    evaluation       TEXT        NOT NULL,      -- rule-set version + context of the findings
    -- The newest readable policy version; kept while the policy is unreadable.
    policy_sha256    TEXT,
    -- Why the policy could not be read at the last sync; NULL when it was read.
    policy_error     TEXT,
    remediable       BOOLEAN     NOT NULL,
    first_seen       TIMESTAMPTZ NOT NULL,
    last_seen        TIMESTAMPTZ NOT NULL,
    deleted_at       TIMESTAMPTZ
);

-- Per account·region work (change detection, deletion, API filters) and cursor pages by ARN.
CREATE INDEX keys_account_region_arn ON keys (account_id, region, arn);
-- Live keys in ARN order, the default listing.
CREATE INDEX keys_live_arn ON keys (arn) WHERE deleted_at IS NULL;

-- Every distinct policy text a key has had, in order; A -> B -> A is three rows.
CREATE TABLE policy_versions (
    id         BIGSERIAL   NOT NULL PRIMARY KEY,
    key_arn    TEXT        COLLATE "C" NOT NULL REFERENCES keys (arn),
    sha256     TEXT        NOT NULL,
    text       TEXT        NOT NULL,            -- exactly as GetKeyPolicy returned it
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);

CREATE INDEX policy_versions_key ON policy_versions (key_arn, id);

-- One row per (key, rule, locator), reopened in place when it fires again.
CREATE TABLE findings (
    id              BIGSERIAL   NOT NULL PRIMARY KEY,
    key_arn         TEXT        COLLATE "C" NOT NULL REFERENCES keys (arn),
    rule_id         TEXT        COLLATE "C" NOT NULL,
    locator         TEXT        COLLATE "C" NOT NULL,
    severity        TEXT        NOT NULL,
    -- 'waived' is reserved for the waiver feature; the sync writes open and resolved only.
    status          TEXT        NOT NULL CHECK (status IN ('open', 'resolved', 'waived')),
    statement_index BIGINT,
    sid             TEXT,
    message         TEXT        NOT NULL,
    policy_sha256   TEXT,                       -- evidence: the version it was judged on
    first_seen      TIMESTAMPTZ NOT NULL,
    last_seen       TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    UNIQUE (key_arn, rule_id, locator)
);

-- Filters by rule and severity, and the per-rule counts of metrics and the dashboard.
CREATE INDEX findings_status_rule ON findings (status, rule_id, severity);
CREATE INDEX findings_status_severity ON findings (status, severity);

-- One row per account·region pass.
CREATE TABLE sync_runs (
    id                    BIGSERIAL   NOT NULL PRIMARY KEY,
    account_id            TEXT        COLLATE "C" NOT NULL,
    region                TEXT        COLLATE "C" NOT NULL,
    started_at            TIMESTAMPTZ NOT NULL,
    finished_at           TIMESTAMPTZ,
    status                TEXT        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    keys_seen             BIGINT      NOT NULL DEFAULT 0,
    keys_changed          BIGINT      NOT NULL DEFAULT 0,
    policy_versions_added BIGINT      NOT NULL DEFAULT 0,
    findings_opened       BIGINT      NOT NULL DEFAULT 0,
    findings_resolved     BIGINT      NOT NULL DEFAULT 0,
    keys_deleted          BIGINT      NOT NULL DEFAULT 0,
    error                 TEXT
);

CREATE INDEX sync_runs_account_region ON sync_runs (account_id, region, id);
-- The dashboard's trend over time.
CREATE INDEX sync_runs_started ON sync_runs (started_at);

-- Who is syncing an account·region right now, and when it last finished.
CREATE TABLE sync_leases (
    account_id       TEXT        COLLATE "C" NOT NULL,
    region           TEXT        COLLATE "C" NOT NULL,
    owner            TEXT,
    lease_until      TIMESTAMPTZ,
    last_finished_at TIMESTAMPTZ,
    PRIMARY KEY (account_id, region)
);
