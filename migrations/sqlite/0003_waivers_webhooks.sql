-- Waivers, ticket references, and the webhook outbox and deliveries
-- (migrations/postgres/0003_waivers_webhooks.sql is its twin). Timestamps as in 0001:
-- fixed-width RFC 3339 UTC text with microseconds, so text order is time order.

-- A ticketing system's reference for a finding (e.g. JIRA-123), set through the API.
ALTER TABLE findings ADD COLUMN ticket TEXT;

-- Accepted risk for one rule on one key, or on every key of an account (key_arn NULL). A
-- waiver never changes the stored status of a finding: reads report an open finding as
-- `waived` while an unrevoked waiver covers it and `expires_at` lies after the read's "now",
-- so a waiver lapses by itself at expiry with no job to run. Rows are never deleted.
CREATE TABLE waivers (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_arn    TEXT,                            -- NULL: every key of the account
    account_id TEXT    NOT NULL,
    rule_id    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    author     TEXT    NOT NULL,                -- the token name that waived
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    revoked_at TEXT,
    revoked_by TEXT
) STRICT;

-- The waivers that may cover a finding: same account and rule, unrevoked.
CREATE INDEX waivers_active ON waivers (account_id, rule_id, key_arn, expires_at)
    WHERE revoked_at IS NULL;

-- Events for webhooks, written in the same transaction as the change they describe.
-- dispatched_at is stamped once deliveries to the configured webhooks exist for the event.
CREATE TABLE outbox (
    id            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    event         TEXT    NOT NULL,             -- e.g. finding.opened
    payload       TEXT    NOT NULL,             -- JSON text: the event's `data`
    created_at    TEXT    NOT NULL,
    dispatched_at TEXT
) STRICT;

CREATE INDEX outbox_undispatched ON outbox (id) WHERE dispatched_at IS NULL;

-- One row per (event, webhook): id is the X-Keyward-Delivery idempotency id, the same on every
-- attempt. A sender claims a due row by setting lease_owner/lease_until in one conditional
-- update, so two replicas never send the same attempt at once.
CREATE TABLE webhook_deliveries (
    seq             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,  -- listing order
    id              TEXT    NOT NULL UNIQUE,
    outbox_id       INTEGER NOT NULL REFERENCES outbox (id),
    webhook         TEXT    NOT NULL,           -- the webhook's URL
    event           TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    next_attempt_at TEXT    NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT,
    last_status     INTEGER,                    -- HTTP status of the last attempt
    last_error      TEXT,
    delivered_at    TEXT,
    UNIQUE (outbox_id, webhook)
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (status, seq);
