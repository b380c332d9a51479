-- The DescribeKey fields without a column of their own (algorithms, ValidTo, ExpirationModel,
-- PendingDeletionWindowInDays, key stores, MultiRegionConfiguration, Enabled, ...), as one JSON
-- object: nothing filters or sorts on them, and new AWS fields need no migration. Keys synced
-- before this migration read '{}' until their next sync rewrites them (their fingerprint
-- changes, so the first pass after the upgrade does).
ALTER TABLE keys ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}';
