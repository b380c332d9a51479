-- Who claimed an `applying` remediation and when (migrations/postgres/0007_remediation_claims.sql
-- is its twin). Timestamps as in 0001: fixed-width RFC 3339 UTC text with microseconds.
--
-- `claimed_by` names one claim (the instance id and a nonce): only that claim may finish the
-- apply, and crash recovery settles a row only once its claim is older than the claim lease, so
-- a replica or a `keyward remediation apply` process applying right now is never overtaken.
ALTER TABLE remediations ADD COLUMN claimed_by TEXT;
ALTER TABLE remediations ADD COLUMN claimed_at TEXT;

-- Rows a process older than this migration left applying: their claim dates from the last update.
UPDATE remediations SET claimed_at = updated_at WHERE state = 'applying';

CREATE INDEX remediations_applying ON remediations (claimed_at) WHERE state = 'applying';
