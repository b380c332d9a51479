-- What the dashboard's compliance figures read instead of joining every open finding to its key
-- and to the waivers (migrations/postgres/0006_compliance_figures.sql is its twin).
--
-- They rest on an invariant the sync keeps: an open finding always belongs to a live key (the
-- sync resolves a key's open findings in the same transaction that sets its deleted_at).

-- A finding's account and region are its key's (a key's ARN fixes both). Every write of a finding
-- writes them, so the open findings an account-wide waiver covers are found from the waiver, by
-- account and rule, and counted per account·region without their keys. The defaults only serve
-- this ALTER TABLE: the UPDATE below fills every existing row.
ALTER TABLE findings ADD COLUMN account_id TEXT NOT NULL DEFAULT '';
ALTER TABLE findings ADD COLUMN region TEXT NOT NULL DEFAULT '';
UPDATE findings SET (account_id, region) =
    (SELECT k.account_id, k.region FROM keys k WHERE k.arn = findings.key_arn);

-- A key's open findings as stored (waived ones included), and how many of them are
-- KMS-DELEGATION: written by the sync in the same transaction as the findings, 0 once deleted.
-- Per account·region, the keys with open findings and the delegating keys are then counted
-- from the keys alone; active waivers are subtracted at read time.
ALTER TABLE keys ADD COLUMN open_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN delegation_count INTEGER NOT NULL DEFAULT 0;
UPDATE keys SET
    open_count = (SELECT COUNT(*) FROM findings f
        WHERE f.key_arn = keys.arn AND f.status = 'open'),
    delegation_count = (SELECT COUNT(*) FROM findings f
        WHERE f.key_arn = keys.arn AND f.status = 'open' AND f.rule_id = 'KMS-DELEGATION');

-- Each index repeats the column of its WHERE so that SQLite reads the index alone (it does not
-- take a partial index as covering when the WHERE's column is missing from it).

-- Live keys per account·region.
CREATE INDEX keys_live_region ON keys (account_id, region, deleted_at) WHERE deleted_at IS NULL;
-- Live keys with open findings per account·region, with their counts.
CREATE INDEX keys_live_open ON keys (account_id, region, deleted_at, open_count, delegation_count)
    WHERE deleted_at IS NULL AND open_count > 0;
-- The open findings a waiver covers: by account and rule (and key, for a key's waiver).
CREATE INDEX findings_open_waivable
    ON findings (account_id, rule_id, key_arn, region, severity, status)
    WHERE status = 'open';
