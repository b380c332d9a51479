-- What the dashboard's compliance figures read instead of joining every open finding to its key
-- and to the waivers (migrations/sqlite/0006_compliance_figures.sql is its twin).
--
-- They rest on an invariant the sync keeps: an open finding always belongs to a live key (the
-- sync resolves a key's open findings in the same transaction that sets its deleted_at).

-- A finding's account and region are its key's (a key's ARN fixes both). Every write of a finding
-- writes them, so the open findings an account-wide waiver covers are found from the waiver, by
-- account and rule, and counted per account·region without their keys.
ALTER TABLE findings ADD COLUMN account_id TEXT COLLATE "C";
ALTER TABLE findings ADD COLUMN region TEXT COLLATE "C";
UPDATE findings f SET account_id = k.account_id, region = k.region FROM keys k WHERE k.arn = f.key_arn;
ALTER TABLE findings ALTER COLUMN account_id SET NOT NULL;
ALTER TABLE findings ALTER COLUMN region SET NOT NULL;

-- A key's open findings as stored (waived ones included), and how many of them are
-- KMS-DELEGATION: written by the sync in the same transaction as the findings, 0 once deleted.
-- Per account·region, the keys with open findings and the delegating keys are then counted
-- from the keys alone; active waivers are subtracted at read time.
ALTER TABLE keys ADD COLUMN open_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN delegation_count BIGINT NOT NULL DEFAULT 0;
UPDATE keys k SET open_count = c.open_count, delegation_count = c.delegation_count
FROM (
    SELECT key_arn, COUNT(*) AS open_count,
        COUNT(*) FILTER (WHERE rule_id = 'KMS-DELEGATION') AS delegation_count
    FROM findings WHERE status = 'open' GROUP BY key_arn
) c
WHERE c.key_arn = k.arn;

-- The indexes are the SQLite twin's, which repeat the column of their WHERE so that SQLite
-- reads the index alone.

-- Live keys per account·region.
CREATE INDEX keys_live_region ON keys (account_id, region, deleted_at) WHERE deleted_at IS NULL;
-- Live keys with open findings per account·region, with their counts.
CREATE INDEX keys_live_open ON keys (account_id, region, deleted_at, open_count, delegation_count)
    WHERE deleted_at IS NULL AND open_count > 0;
-- The open findings a waiver covers: by account and rule (and key, for a key's waiver).
CREATE INDEX findings_open_waivable
    ON findings (account_id, rule_id, key_arn, region, severity, status)
    WHERE status = 'open';
