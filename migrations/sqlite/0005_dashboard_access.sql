-- Dashboard sessions, daily compliance snapshots, IAM inventories and the access impact of
-- remediations (migrations/postgres/0005_dashboard_access.sql is its twin).

-- A dashboard sign-in. Only the SHA-256 of the cookie's secret is kept, like API tokens.
CREATE TABLE sessions (
    id_sha256  TEXT NOT NULL PRIMARY KEY,
    actor      TEXT NOT NULL,                   -- the token name or proxy user: the audit actor
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
    token_name TEXT,                            -- the token signed in with; revoking it ends the session
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;

CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Compliance per account·region per day, as the last sync of that day left it: the trend chart.
CREATE TABLE daily_snapshots (
    day             TEXT    NOT NULL,           -- YYYY-MM-DD (UTC)
    account_id      TEXT    NOT NULL,
    region          TEXT    NOT NULL,
    keys            INTEGER NOT NULL,
    compliant_keys  INTEGER NOT NULL,
    open_findings   INTEGER NOT NULL,
    delegating_keys INTEGER NOT NULL,
    recorded_at     TEXT    NOT NULL,
    PRIMARY KEY (day, account_id, region)
) STRICT;

-- The newest IAM inventory of each account (GetAccountAuthorizationDetails, normalised JSON).
-- A failed read only sets last_error: the previous inventory stays.
CREATE TABLE iam_inventories (
    account_id    TEXT NOT NULL PRIMARY KEY,
    sha256        TEXT,
    inventory     TEXT,                         -- JSON: access::IamInventory
    fetched_at    TEXT,                         -- last successful read
    changed_at    TEXT,                         -- when the content last changed
    last_error    TEXT,
    last_error_at TEXT
) STRICT;

-- Who loses, keeps and gains access if the proposal is applied (JSON: access::AccessImpact).
ALTER TABLE remediations ADD COLUMN impact TEXT;

-- The IAM inventory read of the pass that ran this account·region, when it failed.
ALTER TABLE sync_runs ADD COLUMN iam_error TEXT;

-- Key lists sorted by state; the finding subqueries per key use findings_key_status.
CREATE INDEX keys_live_state ON keys (key_state, arn) WHERE deleted_at IS NULL;

-- The audit trail of one key (its remediations) on the dashboard.
CREATE INDEX audit_events_target ON audit_events (target, id);

-- The dashboard's change marker counts running sync runs on every overview.
CREATE INDEX sync_runs_running ON sync_runs (id) WHERE status = 'running';
