-- Waivers, ticket references, and the webhook outbox and deliveries
-- (migrations/sqlite/0003_waivers_webhooks.sql is its twin).

-- A ticketing system's reference for a finding (e.g. JIRA-123), set through the API.
ALTER TABLE findings ADD COLUMN ticket TEXT;

-- Accepted risk for one rule on one key, or on every key of an account (key_arn NULL). A
-- waiver never changes the stored status of a finding: reads report an open finding as
-- `waived` while an unrevoked waiver covers it and `expires_at` lies after the read's "now",
-- so a waiver lapses by itself at expiry with no job to run. Rows are never deleted.
CREATE TABLE waivers (
    id         BIGSERIAL   NOT NULL PRIMARY KEY,
    key_arn    TEXT        COLLATE "C",         -- NULL: every key of the account
    account_id TEXT        COLLATE "C" NOT NULL,
    rule_id    TEXT        COLLATE "C" NOT NULL,
    reason     TEXT        NOT NULL,
    author     TEXT        NOT NULL,            -- the token name that waived
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    revoked_by TEXT
);

-- The waivers that may cover a finding: same account and rule, unrevoked.
CREATE INDEX waivers_active ON waivers (account_id, rule_id, key_arn, expires_at)
    WHERE revoked_at IS NULL;

-- Events for webhooks, written in the same transaction as the change they describe.
-- dispatched_at is stamped once deliveries to the configured webhooks exist for the event, so
-- an event whose transaction commits after a later id's still gets dispatched.
CREATE TABLE outbox (
    id            BIGSERIAL   NOT NULL PRIMARY KEY,
    event         TEXT        NOT NULL,         -- e.g. finding.opened
    payload       TEXT        NOT NULL,         -- JSON text: the event's `data`
    created_at    TIMESTAMPTZ NOT NULL,
    dispatched_at TIMESTAMPTZ
);

CREATE INDEX outbox_undispatched ON outbox (id) WHERE dispatched_at IS NULL;

-- One row per (event, webhook): id is the X-Keyward-Delivery idempotency id, the same on every
-- attempt. A sender claims a due row by setting lease_owner/lease_until under
-- FOR UPDATE SKIP LOCKED, so two replicas never send the same attempt at once.
CREATE TABLE webhook_deliveries (
    seq             BIGSERIAL   NOT NULL PRIMARY KEY,  -- listing order
    id              TEXT        COLLATE "C" NOT NULL UNIQUE,
    outbox_id       BIGINT      NOT NULL REFERENCES outbox (id),
    webhook         TEXT        COLLATE "C" NOT NULL,  -- the webhook's URL
    event           TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    last_status     INTEGER,                    -- HTTP status of the last attempt
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    UNIQUE (outbox_id, webhook)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (status, seq);
