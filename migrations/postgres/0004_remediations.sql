-- Approval-gated remediations of key policies (migrations/sqlite/0004_remediations.sql is its
-- twin).

-- One proposed policy change for one key. State machine:
-- pending_approval → approved → applying → applied; side exits rejected, stale, failed, expired.
-- `applying` is entered by one conditional update only, so a proposal is applied at most once.
CREATE TABLE remediations (
    id              BIGSERIAL   NOT NULL PRIMARY KEY,
    key_arn         TEXT        COLLATE "C" NOT NULL,
    account_id      TEXT        COLLATE "C" NOT NULL,
    region          TEXT        COLLATE "C" NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('pending_approval', 'approved',
                        'applying', 'applied', 'rolled_back', 'rejected', 'stale', 'failed',
                        'expired')),
    requester       TEXT        NOT NULL,       -- the token name that proposed
    ticket          TEXT,
    comment         TEXT,
    base_policy     TEXT        NOT NULL,       -- the policy as read from AWS when proposed
    base_sha256     TEXT        NOT NULL,
    proposed_policy TEXT        NOT NULL,
    proposed_sha256 TEXT        NOT NULL,
    diff            TEXT        NOT NULL,       -- JSON: the statement diff
    resolves        TEXT        NOT NULL,       -- JSON: rule ids the proposal resolves
    remaining       TEXT        NOT NULL,       -- JSON: rule ids it leaves
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    applied_at      TIMESTAMPTZ,
    error           TEXT,
    rollback_of     BIGINT      REFERENCES remediations (id),
    idempotency_key TEXT        COLLATE "C" UNIQUE
);

CREATE INDEX remediations_key ON remediations (key_arn, id);
CREATE INDEX remediations_open ON remediations (state, expires_at)
    WHERE state IN ('pending_approval', 'approved');

-- One row per distinct approver of a remediation.
CREATE TABLE remediation_approvals (
    remediation_id BIGINT      NOT NULL REFERENCES remediations (id),
    approver       TEXT        NOT NULL,
    comment        TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (remediation_id, approver)
);
