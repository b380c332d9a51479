//! What the SQLite and Postgres stores share: error mapping, JSON columns, count conversions
//! and the pure half of findings reconciliation, so both backends decide the same way.

use super::{NewFinding, RegionSync, StoreError, StoreResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool};
use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};

/// A transaction on a pooled connection of its own, begun with a statement of the caller's
/// choice (`BEGIN IMMEDIATE` on SQLite).
///
/// Not sqlx's `Transaction`: in sqlx 0.8.6 a future cancelled between sending BEGIN and building
/// the `Transaction` returns the connection to the pool with the transaction still open
/// (`begin_with` on SQLite; `begin` on Postgres, sqlx issue #4385). An open `BEGIN IMMEDIATE`
/// would hold SQLite's write lock until that connection happened to be reused. This guard is
/// armed *before* BEGIN is sent; [`Tx::finish`] commits or rolls back, and a guard dropped while
/// armed (a `?` inside, a failed COMMIT or ROLLBACK, a cancelled caller) closes its connection,
/// which makes the database roll the transaction back.
pub(super) struct Tx<DB: Database> {
    conn: PoolConnection<DB>,
    open: bool,
}

// One impl per backend rather than a generic one: a `for<'c> &'c mut DB::Connection: Executor`
// bound makes the callers' futures fail the `Send` proof that `async_trait` needs.
macro_rules! tx_impl {
    ($db:ty, $conn:ty) => {
        impl Deref for Tx<$db> {
            type Target = $conn;

            fn deref(&self) -> &$conn {
                &self.conn
            }
        }

        impl DerefMut for Tx<$db> {
            fn deref_mut(&mut self) -> &mut $conn {
                &mut self.conn
            }
        }

        impl Tx<$db> {
            pub(super) async fn begin(
                pool: &Pool<$db>,
                statement: &'static str,
            ) -> StoreResult<Self> {
                let conn = pool.acquire().await.map_err(db_err)?;
                let mut tx = Self { conn, open: true };
                (&mut *tx.conn).execute(statement).await.map_err(db_err)?;
                Ok(tx)
            }

            /// Commits when the work succeeded, rolls back when it failed; returns the work's
            /// result.
            pub(super) async fn finish<T>(mut self, result: StoreResult<T>) -> StoreResult<T> {
                match result {
                    Ok(value) => {
                        (&mut *self.conn).execute("COMMIT").await.map_err(db_err)?;
                        self.open = false;
                        Ok(value)
                    }
                    Err(err) => {
                        // A failed ROLLBACK leaves the guard armed: dropping it closes the
                        // connection.
                        if (&mut *self.conn).execute("ROLLBACK").await.is_ok() {
                            self.open = false;
                        }
                        Err(err)
                    }
                }
            }
        }
    };
}

tx_impl!(sqlx::Sqlite, sqlx::SqliteConnection);
tx_impl!(sqlx::Postgres, sqlx::PgConnection);

impl<DB: Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// Maps a sqlx error onto [`StoreError`]: the one place unique violations become `Conflict`.
pub(super) fn db_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_string())
        }
        sqlx::Error::RowNotFound => StoreError::NotFound(err.to_string()),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Database(err.to_string()),
    }
}

/// Maps a failed migration run.
pub(super) fn migrate_err(err: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Migration(err.to_string())
}

/// Serializes a list or map column.
pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("encoding JSON: {e}")))
}

/// Parses a list or map column; a bad value means the row is corrupt.
pub(super) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// A stored count as the `u64` the rows carry.
pub(super) fn count(column: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {column} holds a negative count")))
}

/// A count as the database's signed 64-bit integer, saturating.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The status a finished sync run gets.
pub(super) fn run_status(error: Option<&str>) -> &'static str {
    if error.is_some() {
        "failed"
    } else {
        "succeeded"
    }
}

/// The ARNs a region sync touches as present.
pub(super) struct Listed {
    /// Listed keys not written as changed: they only get their last-seen stamp.
    pub stamp: Vec<String>,
    /// Every key known present (listed or changed): never marked deleted by this sync.
    pub present: Vec<String>,
}

/// Splits a sync's listing into keys to stamp and keys known present.
pub(super) fn listed(sync: &RegionSync) -> Listed {
    let changed: HashSet<&str> = sync.updates.iter().map(|u| u.key.arn.as_str()).collect();
    let mut seen = HashSet::new();
    let stamp = sync
        .listed
        .iter()
        .filter(|arn| !changed.contains(arn.as_str()) && seen.insert(arn.as_str()))
        .cloned()
        .collect();
    let mut present_set = HashSet::new();
    let present = sync
        .listed
        .iter()
        .map(String::as_str)
        .chain(changed.iter().copied())
        .filter(|arn| present_set.insert(*arn))
        .map(str::to_string)
        .collect();
    Listed { stamp, present }
}

/// A finding already stored for a key.
pub(super) struct ExistingFinding {
    pub id: i64,
    pub rule_id: String,
    pub locator: String,
    pub status: String,
}

/// How to bring a key's stored findings in line with the engine's current set.
pub(super) struct FindingsPlan<'a> {
    /// Open findings that no longer fire.
    pub resolve: Vec<i64>,
    /// The current findings, one per (rule id, locator), first occurrence kept.
    pub upsert: Vec<&'a NewFinding>,
    /// How many of `upsert` are new or reopen a resolved finding.
    pub opened: u64,
}

/// Plans the reconciliation of one key's findings.
pub(super) fn plan_findings<'a>(
    existing: &[ExistingFinding],
    current: &'a [NewFinding],
) -> FindingsPlan<'a> {
    let mut keys = HashSet::new();
    let upsert: Vec<&NewFinding> = current
        .iter()
        .filter(|f| keys.insert((f.rule_id.as_str(), f.locator.as_str())))
        .collect();
    let stored: HashMap<(&str, &str), &ExistingFinding> = existing
        .iter()
        .map(|f| ((f.rule_id.as_str(), f.locator.as_str()), f))
        .collect();
    let opened = upsert
        .iter()
        .filter(|f| {
            stored
                .get(&(f.rule_id.as_str(), f.locator.as_str()))
                .is_none_or(|old| old.status == "resolved")
        })
        .count();
    let resolve = existing
        .iter()
        .filter(|f| f.status == "open" && !keys.contains(&(f.rule_id.as_str(), f.locator.as_str())))
        .map(|f| f.id)
        .collect();
    FindingsPlan {
        resolve,
        upsert,
        opened: u64::try_from(opened).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn versions(migrator: &sqlx::migrate::Migrator) -> BTreeSet<(i64, String)> {
        migrator
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let sqlite = versions(&super::super::sqlite::MIGRATOR);
        let postgres = versions(&super::super::postgres::MIGRATOR);
        assert!(!sqlite.is_empty());
        assert_eq!(
            sqlite, postgres,
            "migrations/sqlite and migrations/postgres drifted"
        );
    }

    #[test]
    fn migration_files_are_named_alike() {
        let names = |dir: &str| -> BTreeSet<String> {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            std::fs::read_dir(path)
                .expect("migrations folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("migrations/sqlite"), names("migrations/postgres"));
    }

    fn new(rule: &str, locator: &str) -> NewFinding {
        NewFinding {
            rule_id: rule.into(),
            locator: locator.into(),
            severity: "high".into(),
            statement_index: None,
            sid: None,
            message: "m".into(),
        }
    }

    fn old(id: i64, rule: &str, locator: &str, status: &str) -> ExistingFinding {
        ExistingFinding {
            id,
            rule_id: rule.into(),
            locator: locator.into(),
            status: status.into(),
        }
    }

    #[test]
    fn plan_resolves_gone_opens_new_and_reopens_resolved() {
        let existing = [
            old(1, "A", "0", "open"),
            old(2, "B", "0", "open"),
            old(3, "C", "0", "resolved"),
            old(4, "D", "0", "resolved"),
        ];
        let current = [new("A", "0"), new("C", "0"), new("E", "1"), new("E", "1")];
        let plan = plan_findings(&existing, &current);
        assert_eq!(plan.resolve, vec![2]);
        assert_eq!(plan.upsert.len(), 3, "duplicates collapse");
        assert_eq!(plan.opened, 2, "E is new, C reopens, A stays open");
    }

    #[test]
    fn listed_separates_stamps_from_changed_keys() {
        let sync = RegionSync {
            account_id: "1".into(),
            region: "r".into(),
            now: chrono::Utc::now(),
            listed: vec!["a".into(), "b".into(), "a".into()],
            listing_complete: true,
            updates: vec![],
        };
        let l = listed(&sync);
        assert_eq!(l.stamp, vec!["a", "b"]);
        assert_eq!(l.present, vec!["a", "b"]);
    }
}
