-- Approval-gated remediations of key policies (migrations/postgres/0004_remediations.sql is its
-- twin). Timestamps as in 0001: fixed-width RFC 3339 UTC text with microseconds.

-- One proposed policy change for one key. State machine:
-- pending_approval → approved → applying → applied; side exits rejected, stale, failed, expired.
-- `applying` is entered by one conditional update only, so a proposal is applied at most once.
CREATE TABLE remediations (
    id              INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_arn         TEXT    NOT NULL,
    account_id      TEXT    NOT NULL,
    region          TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending_approval', 'approved', 'applying',
                        'applied', 'rolled_back', 'rejected', 'stale', 'failed', 'expired')),
    requester       TEXT    NOT NULL,           -- the token name that proposed
    ticket          TEXT,
    comment         TEXT,
    base_policy     TEXT    NOT NULL,           -- the policy as read from AWS when proposed
    base_sha256     TEXT    NOT NULL,
    proposed_policy TEXT    NOT NULL,
    proposed_sha256 TEXT    NOT NULL,
    diff            TEXT    NOT NULL,           -- JSON: the statement diff
    resolves        TEXT    NOT NULL,           -- JSON: rule ids the proposal resolves
    remaining       TEXT    NOT NULL,           -- JSON: rule ids it leaves
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    expires_at      TEXT    NOT NULL,
    applied_at      TEXT,
    error           TEXT,
    rollback_of     INTEGER REFERENCES remediations (id),
    idempotency_key TEXT    UNIQUE
) STRICT;

CREATE INDEX remediations_key ON remediations (key_arn, id);
CREATE INDEX remediations_open ON remediations (state, expires_at)
    WHERE state IN ('pending_approval', 'approved');

-- One row per distinct approver of a remediation.
CREATE TABLE remediation_approvals (
    remediation_id INTEGER NOT NULL REFERENCES remediations (id),
    approver       TEXT    NOT NULL,
    comment        TEXT,
    created_at     TEXT    NOT NULL,
    UNIQUE (remediation_id, approver)
) STRICT;
