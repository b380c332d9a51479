//! What the SQLite and Postgres stores share: error mapping, JSON columns, count conversions
//! and the pure half of findings reconciliation, so both backends decide the same way.

use super::{
    ApplyResult, ApprovalRow, AuditEvent, AuditVerification, ComplianceFigures, DeliveryAttempt,
    FindingFilter, FindingRow, KeyFilter, KeySort, NewAuditEvent, NewFinding, RegionCompliance,
    RegionSync, RemediationRow, StoreError, StoreResult, StoreStats, WaiverRow,
    WebhookSubscription, audit_hash, events, remediation_state,
};
use chrono::{DateTime, SubsecRound, Utc};
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
    /// Stamped keys whose policy was read this pass: their current policy version gets its
    /// last-seen stamp too.
    pub policy_stamp: Vec<String>,
}

/// Splits a sync's listing into keys to stamp and keys known present.
pub(super) fn listed(sync: &RegionSync) -> Listed {
    let changed: HashSet<&str> = sync.updates.iter().map(|u| u.key.arn.as_str()).collect();
    let mut seen = HashSet::new();
    let stamp: Vec<String> = sync
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
    let unread: HashSet<&str> = sync.unread.iter().map(String::as_str).collect();
    let policy_stamp = stamp
        .iter()
        .filter(|arn| !unread.contains(arn.as_str()))
        .cloned()
        .collect();
    Listed {
        stamp,
        present,
        policy_stamp,
    }
}

/// True when the stored snapshots of `day` hold exactly `regions`' figures, so recording the
/// day again would write the same rows (both lists are ordered by account and region).
pub(super) fn snapshot_matches(
    day: chrono::NaiveDate,
    stored: &[super::DailySnapshot],
    regions: &[super::RegionCompliance],
) -> bool {
    let stored: Vec<_> = stored.iter().filter(|s| s.day == day).collect();
    stored.len() == regions.len()
        && stored.iter().zip(regions).all(|(s, r)| {
            s.account_id == r.account_id
                && s.region == r.region
                && s.keys == r.keys
                && s.compliant_keys == r.compliant_keys
                && s.open_findings == r.open_findings
                && s.delegating_keys == r.delegating_keys
        })
}

/// A finding already stored for a key.
pub(super) struct ExistingFinding {
    pub id: i64,
    pub rule_id: String,
    pub locator: String,
    pub status: String,
}

/// A current finding to write, and whether writing it opens it (new, or reopening a resolved
/// one): those get a `finding.opened` event.
pub(super) struct Upsert<'a> {
    pub finding: &'a NewFinding,
    pub opens: bool,
}

/// How to bring a key's stored findings in line with the engine's current set.
pub(super) struct FindingsPlan<'a> {
    /// Open findings that no longer fire.
    pub resolve: Vec<i64>,
    /// The current findings, one per (rule id, locator), first occurrence kept.
    pub upsert: Vec<Upsert<'a>>,
    /// How many of `upsert` are new or reopen a resolved finding.
    pub opened: u64,
    /// Whether the key's number of open findings, or of open KMS-DELEGATION findings, changes:
    /// only then do the key row's counts need recounting ([`COUNT_OPEN_SQL`]).
    pub recount: bool,
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
    let upsert: Vec<Upsert> = upsert
        .into_iter()
        .map(|f| Upsert {
            finding: f,
            opens: stored
                .get(&(f.rule_id.as_str(), f.locator.as_str()))
                .is_none_or(|old| old.status == "resolved"),
        })
        .collect();
    let opened = upsert.iter().filter(|u| u.opens).count();
    let resolve = existing
        .iter()
        .filter(|f| f.status == "open" && !keys.contains(&(f.rule_id.as_str(), f.locator.as_str())))
        .map(|f| f.id)
        .collect();
    // Every upsert leaves its finding open and every other open finding gets resolved.
    let before = open_counts(
        existing
            .iter()
            .filter(|f| f.status == "open")
            .map(|f| f.rule_id.as_str()),
    );
    let after = open_counts(upsert.iter().map(|u| u.finding.rule_id.as_str()));
    FindingsPlan {
        resolve,
        upsert,
        opened: u64::try_from(opened).unwrap_or(u64::MAX),
        recount: before != after,
    }
}

/// How many open findings have these rules, and how many of them are KMS-DELEGATION.
fn open_counts<'a>(rules: impl Iterator<Item = &'a str>) -> (usize, usize) {
    rules.fold((0, 0), |(open, delegation), rule| {
        (open + 1, delegation + usize::from(rule == DELEGATION_RULE))
    })
}

/// How a dynamic query's conditions differ between the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `expr` folded to lower case. ASCII only on both backends: SQLite's `lower()` knows no
    /// more, and Postgres folds the same way under `COLLATE "C"`, so both filter alike.
    fn lower(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("lower({expr})"),
            Dialect::Postgres => format!("lower({expr} COLLATE \"C\")"),
        }
    }

    /// `expr` contains the substring that the LIKE pattern placeholder `p` stands for.
    fn like(self, expr: &str, p: &str) -> String {
        format!("{} LIKE {p} ESCAPE '\\'", self.lower(expr))
    }

    /// An alias of the key `k` contains the pattern `p`.
    fn alias_like(self, p: &str) -> String {
        let source = match self {
            Dialect::Sqlite => "json_each(k.aliases) AS a",
            Dialect::Postgres => "unnest(k.aliases) AS a(value)",
        };
        format!(
            "EXISTS (SELECT 1 FROM {source} WHERE {})",
            self.like("a.value", p)
        )
    }

    /// A tag key or value of the key `k` contains the pattern `p`.
    fn tag_like(self, p: &str) -> String {
        let source = match self {
            Dialect::Sqlite => "json_each(k.tags) AS t",
            Dialect::Postgres => "jsonb_each_text(k.tags) AS t(key, value)",
        };
        format!(
            "EXISTS (SELECT 1 FROM {source} WHERE {} OR {})",
            self.like("t.key", p),
            self.like("t.value", p)
        )
    }
}

/// A value bound to a dynamic query's placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
}

/// The conditions of a filtered listing, with their bound values in placeholder order: only
/// the filters given become SQL, so each combination gets a plan of its own.
#[derive(Debug, Clone, Default)]
pub(super) struct Conditions {
    conditions: Vec<String>,
    pub args: Vec<Arg>,
}

impl Conditions {
    /// Binds a value; returns its placeholder.
    pub fn arg(&mut self, value: Arg) -> String {
        self.args.push(value);
        format!("${}", self.args.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.arg(Arg::Text(value.to_string()))
    }

    pub fn push(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// `WHERE …`, or nothing when no condition narrows.
    pub fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }
}

/// A page of a filtered listing and the count of all its matches, as SQL with bound values.
pub(super) struct PagedQuery {
    pub page_sql: String,
    pub page_args: Vec<Arg>,
    pub count_sql: String,
    pub count_args: Vec<Arg>,
}

impl PagedQuery {
    /// `select` (`SELECT … FROM …`) narrowed by `filter`, strictly after the cursor (its column
    /// and value), in `order` (which must start with the cursor column), at most `limit` rows;
    /// `count_from` (`… FROM …`) narrowed by `filter` alone.
    pub fn new(
        select: &str,
        count_from: &str,
        filter: Conditions,
        after: Option<(&str, Arg)>,
        order: &str,
        limit: u32,
    ) -> Self {
        let count_sql = format!(
            "SELECT COUNT(*) AS n FROM {count_from} {}",
            filter.where_clause()
        );
        let count_args = filter.args.clone();
        let mut page = filter;
        if let Some((column, value)) = after {
            let p = page.arg(value);
            page.push(format!("{column} > {p}"));
        }
        let limit = page.arg(Arg::Int(i64::from(limit)));
        Self {
            page_sql: format!(
                "{select} {} ORDER BY {order} LIMIT {limit}",
                page.where_clause()
            ),
            page_args: page.args,
            count_sql,
            count_args,
        }
    }
}

impl PagedQuery {
    /// Like [`PagedQuery::new`], ordered by `order` and paged by `offset` rather than a cursor:
    /// the dashboard sorts by columns that are not unique.
    pub fn sorted(
        select: &str,
        count_from: &str,
        filter: Conditions,
        order: &str,
        offset: u64,
        limit: u32,
    ) -> Self {
        let count_sql = format!(
            "SELECT COUNT(*) AS n FROM {count_from} {}",
            filter.where_clause()
        );
        let count_args = filter.args.clone();
        let mut page = filter;
        let limit = page.arg(Arg::Int(i64::from(limit)));
        let offset = page.arg(Arg::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
        Self {
            page_sql: format!(
                "{select} {} ORDER BY {order} LIMIT {limit} OFFSET {offset}",
                page.where_clause()
            ),
            page_args: page.args,
            count_sql,
            count_args,
        }
    }
}

/// The ORDER BY of a sorted key list over `keys k`; every order ends with the ARN so pages are
/// stable, and keys without an alias sort last either way.
pub(super) fn key_order(sort: KeySort, descending: bool, dialect: Dialect) -> String {
    let dir = if descending { " DESC" } else { "" };
    let first_alias = match dialect {
        Dialect::Sqlite => "json_extract(k.aliases, '$[0]')",
        Dialect::Postgres => "k.aliases[1]",
    };
    let lead = match sort {
        KeySort::Arn => String::new(),
        KeySort::Account => format!("k.account_id{dir}, "),
        KeySort::Region => format!("k.region{dir}, "),
        KeySort::Alias => {
            format!("CASE WHEN {first_alias} IS NULL THEN 1 ELSE 0 END, {first_alias}{dir}, ")
        }
        KeySort::State => format!("k.key_state{dir}, "),
        KeySort::Compliance => format!("open_findings{dir}, "),
    };
    format!("{lead}k.arn{dir}")
}

/// The rule whose open findings make a key count as delegating to IAM.
pub(super) const DELEGATION_RULE: &str = "KMS-DELEGATION";

/// Sets the `open_count` and `delegation_count` of the key `$1` from its findings
/// (`findings_key_status`), in the transaction that changed how many of them are open.
pub(super) const COUNT_OPEN_SQL: &str = "UPDATE keys SET \
    open_count = (SELECT COUNT(*) FROM findings f \
        WHERE f.key_arn = keys.arn AND f.status = 'open'), \
    delegation_count = (SELECT COUNT(*) FROM findings f \
        WHERE f.key_arn = keys.arn AND f.status = 'open' AND f.rule_id = 'KMS-DELEGATION') \
    WHERE arn = $1";

// The compliance figures come from four cheap reads combined by [`combine_figures`]; none joins
// findings to keys for liveness, since an open finding always belongs to a live key (the sync
// resolves a key's open findings in the transaction that marks it deleted).

/// Live keys per account·region, in account and region order (`keys_live_region`).
pub(super) const LIVE_KEYS_SQL: &str = "SELECT account_id, region, COUNT(*) AS n FROM keys \
    WHERE deleted_at IS NULL GROUP BY account_id, region ORDER BY account_id, region";

/// Live keys with open findings per account·region, waived findings included: how many, their
/// open findings, and how many have an open KMS-DELEGATION finding (`keys_live_open`).
pub(super) const OPEN_KEYS_SQL: &str = "SELECT account_id, region, COUNT(*) AS n, \
    CAST(SUM(open_count) AS BIGINT) AS findings, \
    CAST(SUM(CASE WHEN delegation_count > 0 THEN 1 ELSE 0 END) AS BIGINT) AS delegating \
    FROM keys WHERE deleted_at IS NULL AND open_count > 0 GROUP BY account_id, region";

/// Open findings per rule and severity, waived ones included, in rule and severity order
/// (`findings_status_rule`).
pub(super) const OPEN_BY_RULE_SQL: &str = "SELECT rule_id, severity, COUNT(*) AS n FROM findings \
    WHERE status = 'open' GROUP BY rule_id, severity ORDER BY rule_id, severity";

/// The open findings an active waiver covers at "now" (`$1`), looked up from the active waivers
/// (`findings_open_waivable`), so the cost follows the covered findings, not all of them; each
/// with its key's open findings and open KMS-DELEGATION findings. A finding covered by several
/// waivers comes once per waiver. `CROSS JOIN` keeps SQLite from driving from the findings.
pub(super) fn waived_open_sql() -> String {
    let select = format!(
        "SELECT f.id, f.key_arn, f.account_id, f.region, f.rule_id, f.severity, \
             (SELECT COUNT(*) FROM findings g \
                 WHERE g.key_arn = f.key_arn AND g.status = 'open') AS key_open, \
             (SELECT COUNT(*) FROM findings g WHERE g.key_arn = f.key_arn AND g.status = 'open' \
                 AND g.rule_id = '{DELEGATION_RULE}') AS key_delegation \
         FROM waivers w CROSS JOIN findings f \
         WHERE w.revoked_at IS NULL AND w.expires_at > $1 AND f.status = 'open' \
             AND f.account_id = w.account_id AND f.rule_id = w.rule_id"
    );
    format!(
        "{select} AND f.key_arn = w.key_arn \
         UNION ALL {select} AND w.key_arn IS NULL"
    )
}

/// The live keys of one account·region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LiveKeys {
    pub account_id: String,
    pub region: String,
    pub keys: u64,
}

/// The live keys of one account·region that have open findings, waived ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenKeys {
    pub account_id: String,
    pub region: String,
    pub keys: u64,
    pub findings: u64,
    /// Keys with an open KMS-DELEGATION finding.
    pub delegating_keys: u64,
}

/// An open finding that an active waiver covers, with its key's open findings (waived ones
/// included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WaivedFinding {
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    pub rule_id: String,
    pub severity: String,
    pub key_open: u64,
    pub key_delegation: u64,
}

/// What the active waivers take away from one account·region's counts.
#[derive(Default)]
struct Waived {
    findings: u64,
    /// Keys all of whose open findings are waived: compliant after all.
    keys: u64,
    /// Delegating keys all of whose open KMS-DELEGATION findings are waived.
    delegating_keys: u64,
}

/// The compliance figures from the stored counts (`live`, `open`, `by_rule`: open findings in
/// rule and severity order) minus what the active waivers cover (`waived`, in any order, a
/// finding possibly more than once). Keeps the order of `live` and `by_rule`; rules whose every
/// open finding is waived are left out. A waived count above a stored one is `Corrupt`.
pub(super) fn combine_figures(
    live: Vec<LiveKeys>,
    open: Vec<OpenKeys>,
    by_rule: Vec<(String, String, u64)>,
    waived: &[WaivedFinding],
) -> StoreResult<ComplianceFigures> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "the stored open-finding counts disagree with the findings ({what})"
        ))
    };
    let less = |stored: u64, waived: u64, what: &str| {
        stored.checked_sub(waived).ok_or_else(|| corrupt(what))
    };
    // Per key: its open findings, and how many of them are waived.
    struct Key<'a> {
        region: (&'a str, &'a str),
        open: u64,
        delegation: u64,
        waived: u64,
        waived_delegation: u64,
    }
    let mut seen = HashSet::new();
    let mut keys: HashMap<&str, Key> = HashMap::new();
    let mut rules: HashMap<(&str, &str), u64> = HashMap::new();
    let mut regions: HashMap<(&str, &str), Waived> = HashMap::new();
    for f in waived.iter().filter(|f| seen.insert(f.id)) {
        let region = (f.account_id.as_str(), f.region.as_str());
        let key = keys.entry(f.key_arn.as_str()).or_insert(Key {
            region,
            open: f.key_open,
            delegation: f.key_delegation,
            waived: 0,
            waived_delegation: 0,
        });
        key.waived += 1;
        if f.rule_id == DELEGATION_RULE {
            key.waived_delegation += 1;
        }
        *rules
            .entry((f.rule_id.as_str(), f.severity.as_str()))
            .or_default() += 1;
        regions.entry(region).or_default().findings += 1;
    }
    for key in keys.values() {
        let waived = regions.entry(key.region).or_default();
        if less(key.open, key.waived, "a key")? == 0 {
            waived.keys += 1;
        }
        if key.delegation > 0 && less(key.delegation, key.waived_delegation, "a key")? == 0 {
            waived.delegating_keys += 1;
        }
    }

    let open: HashMap<(&str, &str), &OpenKeys> = open
        .iter()
        .map(|o| ((o.account_id.as_str(), o.region.as_str()), o))
        .collect();
    let none = Waived::default();
    let mut stats = StoreStats::default();
    let mut figures = Vec::with_capacity(live.len());
    let mut regions_seen = 0;
    for l in live {
        let region = (l.account_id.as_str(), l.region.as_str());
        let waived = regions.get(&region).unwrap_or(&none);
        let (noncompliant, findings, delegating_keys) = match open.get(&region) {
            Some(o) => {
                regions_seen += 1;
                (
                    less(o.keys, waived.keys, "keys of a region")?,
                    less(o.findings, waived.findings, "findings of a region")?,
                    less(
                        o.delegating_keys,
                        waived.delegating_keys,
                        "keys of a region",
                    )?,
                )
            }
            None => (0, 0, 0),
        };
        let compliant_keys = less(l.keys, noncompliant, "keys of a region")?;
        stats.keys_compliant += compliant_keys;
        stats.keys_noncompliant += noncompliant;
        figures.push(RegionCompliance {
            compliant_keys,
            open_findings: findings,
            delegating_keys,
            keys: l.keys,
            account_id: l.account_id,
            region: l.region,
        });
    }
    if regions_seen != open.len() {
        return Err(corrupt("open findings in a region without live keys"));
    }
    if regions.keys().any(|r| !open.contains_key(r)) {
        return Err(corrupt("waived findings in a region without open ones"));
    }
    let mut rules_seen = 0;
    for (rule, severity, n) in by_rule {
        let waived = match rules.get(&(rule.as_str(), severity.as_str())) {
            Some(&waived) => {
                rules_seen += 1;
                waived
            }
            None => 0,
        };
        let n = less(n, waived, "findings of a rule")?;
        if n > 0 {
            stats.open_findings.push((rule, severity, n));
        }
    }
    if rules_seen != rules.len() {
        return Err(corrupt("waived findings of a rule without open ones"));
    }
    Ok(ComplianceFigures {
        stats,
        regions: figures,
    })
}

/// The parts of a [`super::ChangeMarker`]; "now" is `$1`. Each is an index lookup (the
/// running runs through a partial index); waivers are few.
pub(super) const CHANGE_MARKER_SQL: &str = "SELECT \
        (SELECT COALESCE(MAX(id), 0) FROM sync_runs) AS last_sync_run, \
        (SELECT COUNT(*) FROM sync_runs WHERE status = 'running') AS running, \
        (SELECT COALESCE(MAX(id), 0) FROM waivers) AS last_waiver, \
        (SELECT COUNT(*) FROM waivers WHERE revoked_at IS NOT NULL) AS revoked, \
        (SELECT MIN(expires_at) FROM waivers WHERE revoked_at IS NULL AND expires_at > $1) \
            AS next_expiry";

/// The live session with id hash `$1` at "now" `$2`: unexpired, and its token not revoked.
pub(super) const SESSION_SQL: &str = "SELECT s.actor, s.role, s.token_name, s.csrf_token,         s.created_at, s.expires_at FROM sessions s      WHERE s.id_sha256 = $1 AND s.expires_at > $2 AND (s.token_name IS NULL OR EXISTS         (SELECT 1 FROM api_tokens t WHERE t.name = s.token_name AND t.revoked_at IS NULL))";

/// A LIKE pattern for "contains `q`", ASCII case-folded, with LIKE's wildcards escaped.
pub(super) fn contains_pattern(q: &str) -> String {
    let mut pattern = String::with_capacity(q.len() + 2);
    pattern.push('%');
    for c in q.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    pattern
}

/// An unrevoked waiver `w` that covers the finding `f` of the key `k` at the time the
/// placeholder `now` binds: same account and rule, the finding's key or the whole account.
pub(super) fn waiver_covers(now: &str) -> String {
    format!(
        "w.revoked_at IS NULL AND w.expires_at > {now} AND w.account_id = k.account_id \
         AND w.rule_id = f.rule_id AND (w.key_arn IS NULL OR w.key_arn = f.key_arn)"
    )
}

/// The finding `f` of the key `k` is open and no waiver covers it at `now`.
pub(super) fn unwaived_open(now: &str) -> String {
    format!(
        "f.status = 'open' AND NOT EXISTS (SELECT 1 FROM waivers w WHERE {})",
        waiver_covers(now)
    )
}

/// The open-finding count of the key `k` as a select-list column, waived findings left out.
pub(super) fn open_findings_column(now: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM findings f WHERE f.key_arn = k.arn AND {}) AS open_findings",
        unwaived_open(now)
    )
}

/// `findings f JOIN keys k`, with the waiver `w` covering an open `f` at `now` (the one
/// expiring last) joined when there is one: `FROM` of every finding read.
pub(super) fn findings_from(now: &str) -> String {
    format!(
        "findings f JOIN keys k ON k.arn = f.key_arn \
         LEFT JOIN waivers w ON f.status = 'open' AND w.id = (SELECT w.id FROM waivers w WHERE {} \
             ORDER BY w.expires_at DESC, w.id DESC LIMIT 1)",
        waiver_covers(now)
    )
}

/// The finding columns every finding read selects from [`findings_from`]; `status` already
/// says `waived` for a covered open finding.
pub(super) const FINDING_COLUMNS: &str = "f.id, f.key_arn, k.account_id, k.region, f.rule_id, \
    f.locator, f.severity, \
    CASE WHEN w.id IS NULL THEN f.status ELSE 'waived' END AS status, \
    f.status AS stored_status, f.statement_index, f.sid, f.message, f.policy_sha256, \
    f.first_seen, f.last_seen, f.resolved_at, f.ticket, k.last_seen AS key_last_seen, \
    k.deleted_at AS key_deleted_at, w.id AS waiver_id, w.reason AS waiver_reason, \
    w.expires_at AS waiver_expires_at";

/// The columns of a waiver row.
pub(super) const WAIVER_COLUMNS: &str = "id, key_arn, account_id, rule_id, reason, author, \
    created_at, expires_at, revoked_at, revoked_by";

/// The columns of a delivery row.
pub(super) const DELIVERY_COLUMNS: &str = "seq, id, outbox_id, webhook, event, status, attempts, \
    created_at, next_attempt_at, last_status, last_error, delivered_at";

/// The conditions of [`KeyFilter`] over `keys k`; the first placeholder is "now", for waivers.
pub(super) fn key_conditions(
    filter: &KeyFilter,
    dialect: Dialect,
    now: DateTime<Utc>,
) -> Conditions {
    let mut c = Conditions::default();
    let now = c.arg(Arg::Time(now));
    if filter.deleted_only {
        c.push("k.deleted_at IS NOT NULL".into());
    } else if !filter.include_deleted {
        c.push("k.deleted_at IS NULL".into());
    }
    if let Some(account) = &filter.account {
        let p = c.text(account);
        c.push(format!("k.account_id = {p}"));
    }
    if let Some(region) = &filter.region {
        let p = c.text(region);
        c.push(format!("k.region = {p}"));
    }
    // Rule and severity must hold for one and the same open finding.
    if filter.rule.is_some() || filter.severity.is_some() {
        let mut finding = format!(
            "EXISTS (SELECT 1 FROM findings f WHERE f.key_arn = k.arn AND {}",
            unwaived_open(&now)
        );
        if let Some(rule) = &filter.rule {
            let p = c.text(rule);
            finding.push_str(&format!(" AND f.rule_id = {p}"));
        }
        if let Some(severity) = &filter.severity {
            let p = c.text(severity);
            finding.push_str(&format!(" AND f.severity = {p}"));
        }
        finding.push(')');
        c.push(finding);
    }
    if let Some(compliant) = filter.compliant {
        let not = if compliant { "NOT " } else { "" };
        c.push(format!(
            "{not}EXISTS (SELECT 1 FROM findings f WHERE f.key_arn = k.arn AND {})",
            unwaived_open(&now)
        ));
    }
    if let Some(q) = &filter.q {
        let p = c.text(&contains_pattern(q));
        c.push(format!(
            "({} OR {} OR {} OR {} OR {})",
            dialect.like("k.arn", &p),
            dialect.like("k.key_id", &p),
            dialect.like("k.description", &p),
            dialect.alias_like(&p),
            dialect.tag_like(&p)
        ));
    }
    c
}

/// The conditions of [`FindingFilter`] over [`findings_from`], whose "now" is the first
/// placeholder (bound here).
pub(super) fn finding_conditions(
    filter: &FindingFilter,
    dialect: Dialect,
    now: DateTime<Utc>,
) -> Conditions {
    let mut c = Conditions::default();
    c.arg(Arg::Time(now));
    for (column, value) in [
        ("k.account_id", &filter.account),
        ("k.region", &filter.region),
        ("f.rule_id", &filter.rule),
        ("f.severity", &filter.severity),
        ("f.key_arn", &filter.key_arn),
    ] {
        if let Some(value) = value {
            let p = c.text(value);
            c.push(format!("{column} = {p}"));
        }
    }
    match filter.status.as_deref() {
        None => {}
        Some("open") => c.push("f.status = 'open' AND w.id IS NULL".into()),
        Some("waived") => c.push("w.id IS NOT NULL".into()),
        // Open, waived or not: what still holds on the key.
        Some("current") => c.push("f.status = 'open'".into()),
        Some(other) => {
            let p = c.text(other);
            c.push(format!("f.status = {p}"));
        }
    }
    if let Some(q) = &filter.q {
        let p = c.text(&contains_pattern(q));
        // The fields `q` searches on keys, plus the finding's message.
        c.push(format!(
            "({} OR {} OR {} OR {} OR {} OR {})",
            dialect.like("f.key_arn", &p),
            dialect.like("k.key_id", &p),
            dialect.like("k.description", &p),
            dialect.alias_like(&p),
            dialect.tag_like(&p),
            dialect.like("f.message", &p)
        ));
    }
    c
}

/// A finding as outbox events describe it (the `data` of `finding.*` webhook bodies).
#[derive(Debug, Clone, Serialize)]
pub(super) struct FindingEvent {
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    pub rule_id: String,
    pub locator: String,
    pub severity: String,
    pub status: String,
    pub message: String,
    pub ticket: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl FindingEvent {
    /// The event as outbox payload text.
    pub fn payload(&self) -> StoreResult<String> {
        to_json(self)
    }

    /// The payload of `finding.waived`: the finding, what happened (`waived` or `unwaived`)
    /// and the waivers it happened to.
    pub fn waived_payload(&self, action: &str, waivers: &[WaiverRow]) -> StoreResult<String> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| StoreError::Database(format!("encoding JSON: {e}")))?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("action".into(), action.into());
            let waivers = waivers
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "id": w.id,
                        "scope": w.scope().as_str(),
                        "key_arn": w.key_arn,
                        "account_id": w.account_id,
                        "rule_id": w.rule_id,
                        "reason": w.reason,
                        "author": w.author,
                        "created_at": w.created_at,
                        "expires_at": w.expires_at,
                        "revoked_at": w.revoked_at,
                        "revoked_by": w.revoked_by,
                    })
                })
                .collect::<Vec<_>>();
            map.insert("waivers".into(), waivers.into());
        }
        to_json(&value)
    }
}

impl From<&FindingRow> for FindingEvent {
    fn from(f: &FindingRow) -> Self {
        FindingEvent {
            id: f.id,
            key_arn: f.key_arn.clone(),
            account_id: f.account_id.clone(),
            region: f.region.clone(),
            rule_id: f.rule_id.clone(),
            locator: f.locator.clone(),
            severity: f.severity.clone(),
            status: f.status.clone(),
            message: f.message.clone(),
            ticket: f.ticket.clone(),
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            resolved_at: f.resolved_at,
        }
    }
}

/// The remediation columns, in the order both backends select them.
pub(super) const REMEDIATION_COLUMNS: &str = "id, key_arn, account_id, region, state, requester, \
    ticket, comment, base_policy, base_sha256, proposed_policy, proposed_sha256, diff, resolves, \
    remaining, created_at, updated_at, expires_at, applied_at, error, rollback_of, idempotency_key, \
    impact, claimed_by, claimed_at";

/// The outbox payload of every `remediation.*` event: what a ticketing webhook needs, not the
/// policies themselves.
pub(super) fn remediation_payload(r: &RemediationRow) -> StoreResult<String> {
    to_json(&serde_json::json!({
        "id": r.id,
        "key_arn": r.key_arn,
        "account_id": r.account_id,
        "region": r.region,
        "state": r.state,
        "requester": r.requester,
        "ticket": r.ticket,
        "comment": r.comment,
        "approvers": r.approvals.iter().map(|a| a.approver.as_str()).collect::<Vec<_>>(),
        "resolves": r.resolves,
        "rollback_of": r.rollback_of,
        "error": r.error,
        // Approvers and ticketing systems see who would lose access before the change lands.
        "impact": r.impact,
    }))
}

/// Whether `approver` may approve `r` now; the reason when not.
pub(super) fn check_approval(
    r: &RemediationRow,
    approver: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if r.state != remediation_state::PENDING_APPROVAL {
        return Err(StoreError::Conflict(format!(
            "remediation {} is {}; only a pending remediation can be approved",
            r.id, r.state
        )));
    }
    if r.expires_at <= now {
        return Err(StoreError::Conflict(format!(
            "remediation {} has expired",
            r.id
        )));
    }
    if r.requester == approver {
        return Err(StoreError::Conflict(format!(
            "{approver} requested remediation {}; the requester can never approve it",
            r.id
        )));
    }
    if r.approvals.iter().any(|a| a.approver == approver) {
        return Err(StoreError::Conflict(format!(
            "{approver} has already approved remediation {}",
            r.id
        )));
    }
    Ok(())
}

/// Whether `r` may be rejected as `rejection` says; the reason when not.
pub(super) fn check_rejection(r: &RemediationRow, rejection: &ApprovalRow) -> StoreResult<()> {
    if rejection
        .comment
        .as_deref()
        .is_none_or(|c| c.trim().is_empty())
    {
        return Err(StoreError::Conflict(
            "a comment is required to reject".into(),
        ));
    }
    if r.state != remediation_state::PENDING_APPROVAL && r.state != remediation_state::APPROVED {
        return Err(StoreError::Conflict(format!(
            "remediation {} is {}; only a pending or approved remediation can be rejected",
            r.id, r.state
        )));
    }
    Ok(())
}

/// The state and outbox event an ended apply leads to, with its error.
pub(super) fn apply_result(result: &ApplyResult) -> (&'static str, &'static str, Option<&str>) {
    match result {
        ApplyResult::Applied => (
            remediation_state::APPLIED,
            events::REMEDIATION_APPLIED,
            None,
        ),
        ApplyResult::Stale(e) => (remediation_state::STALE, events::REMEDIATION_STALE, Some(e)),
        ApplyResult::Failed(e) => (
            remediation_state::FAILED,
            events::REMEDIATION_FAILED,
            Some(e),
        ),
        // Not a second approval: its own event (see events::REMEDIATION_UNAPPLIED).
        ApplyResult::Unapplied(_) => (
            remediation_state::APPROVED,
            events::REMEDIATION_UNAPPLIED,
            None,
        ),
    }
}

/// The audit entry the store writes itself when a remediation expires.
pub(super) fn expiry_audit(r: &RemediationRow, now: DateTime<Utc>) -> StoreResult<NewAuditEvent> {
    Ok(NewAuditEvent {
        at: now,
        actor: "keyward".into(),
        action: "remediation.expired".into(),
        target: r.key_arn.clone(),
        detail: to_json(&serde_json::json!({"remediation": r.id, "expires_at": r.expires_at}))?,
    })
}

/// The audit entry the store writes itself when an applied rollback (`rollback`, by `actor`)
/// moves the remediation it undoes to `rolled_back`.
pub(super) fn rolled_back_audit(
    original: &RemediationRow,
    rollback: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> StoreResult<NewAuditEvent> {
    Ok(NewAuditEvent {
        at: now,
        actor: actor.to_string(),
        action: "remediation.rolled_back".into(),
        target: original.key_arn.clone(),
        detail: to_json(
            &serde_json::json!({"remediation": original.id, "rolled_back_by": rollback}),
        )?,
    })
}

/// `$first, $first+1, …` for a conditional `state IN (…)` over `states`.
pub(super) fn state_placeholders(first: usize, states: &[&str]) -> String {
    (first..first + states.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fence of a sync write: `holder` (the lease row's owner) must be `owner`. A lease that
/// expired but was not taken over still counts as held; one another replica claimed does not.
pub(super) fn check_lease_holder(
    sync: &super::RegionSync,
    owner: &str,
    holder: Option<String>,
) -> StoreResult<()> {
    if holder.as_deref() == Some(owner) {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "lease lost: {} {} is held by {} now, so this pass's results were not written",
        sync.account_id,
        sync.region,
        holder.as_deref().unwrap_or("nobody")
    )))
}

/// The payload of `sync.failed`.
pub(super) fn sync_failed_payload(
    run_id: i64,
    account_id: &str,
    region: &str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    error: &str,
) -> StoreResult<String> {
    to_json(&serde_json::json!({
        "run_id": run_id,
        "account_id": account_id,
        "region": region,
        "started_at": started_at,
        "finished_at": finished_at,
        "error": error,
    }))
}

/// A new delivery id: a random (version 4) UUID, the receivers' idempotency key.
pub(super) fn new_delivery_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether a webhook subscribed to an event.
pub(super) fn subscribed<'a>(
    webhooks: &'a [WebhookSubscription],
    event: &'a str,
) -> impl Iterator<Item = &'a WebhookSubscription> + 'a {
    webhooks
        .iter()
        .filter(move |w| w.events.iter().any(|e| e == event))
}

/// The columns the end of a delivery attempt writes: status, next attempt, last HTTP status,
/// last error, delivered-at.
pub(super) struct AttemptColumns<'a> {
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<&'a str>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a DeliveryAttempt> for AttemptColumns<'a> {
    fn from(a: &'a DeliveryAttempt) -> Self {
        match a {
            DeliveryAttempt::Delivered { at, status } => AttemptColumns {
                status: "delivered",
                next_attempt_at: None,
                last_status: Some(i32::from(*status)),
                last_error: None,
                delivered_at: Some(*at),
            },
            DeliveryAttempt::Retry {
                next_attempt_at,
                status,
                error,
            } => AttemptColumns {
                status: "pending",
                next_attempt_at: Some(*next_attempt_at),
                last_status: status.map(i32::from),
                last_error: Some(error),
                delivered_at: None,
            },
            DeliveryAttempt::Failed { status, error } => AttemptColumns {
                status: "failed",
                next_attempt_at: None,
                last_status: status.map(i32::from),
                last_error: Some(error),
                delivered_at: None,
            },
        }
    }
}

/// A stored HTTP status as the `u16` rows carry.
pub(super) fn http_status(value: Option<i32>) -> StoreResult<Option<u16>> {
    value
        .map(|v| {
            u16::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("last_status {v} is not an HTTP status")))
        })
        .transpose()
}

/// Authentication records a token's use at most this often.
pub(super) const TOKEN_USE_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Whether a token last used at `last_used_at` gets a new stamp at `now`.
pub(super) fn stamp_due(last_used_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_used_at.is_none_or(|at| at < now - TOKEN_USE_INTERVAL)
}

/// The `prev_hash` of the first audit entry.
pub(super) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// How many audit entries verification reads at a time.
pub(super) const AUDIT_BATCH: u16 = 1000;

/// The entry to append after the entry hashed `prev_hash` (`None`: the log is empty), its id
/// still 0. `at` is cut to the microseconds both databases store, so the hash recomputed from
/// the stored row is the hash computed here.
pub(super) fn chain_audit(prev_hash: Option<String>, event: &NewAuditEvent) -> AuditEvent {
    let prev_hash = prev_hash.unwrap_or_else(|| GENESIS_HASH.to_string());
    let at = event.at.trunc_subsecs(6);
    let hash = audit_hash(
        &prev_hash,
        at,
        &event.actor,
        &event.action,
        &event.target,
        &event.detail,
    );
    AuditEvent {
        id: 0,
        at,
        actor: event.actor.clone(),
        action: event.action.clone(),
        target: event.target.clone(),
        detail: event.detail.clone(),
        prev_hash,
        hash,
    }
}

/// Walks the audit chain entry by entry in id order, remembering the first break.
pub(super) struct ChainCheck {
    events: u64,
    /// The stored hash of the previous entry, and its id.
    previous: Option<(i64, String)>,
    broken: Option<(i64, String)>,
}

impl ChainCheck {
    pub fn new() -> Self {
        Self {
            events: 0,
            previous: None,
            broken: None,
        }
    }

    /// Checks the next entry; `event` is an error when its row could not be read.
    pub fn check(&mut self, id: i64, event: StoreResult<AuditEvent>) {
        self.events += 1;
        if self.broken.is_some() {
            return;
        }
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                self.broken = Some((id, format!("the entry cannot be read: {err}")));
                return;
            }
        };
        let expected = self.previous.as_ref().map_or(GENESIS_HASH, |(_, h)| h);
        if event.prev_hash != expected {
            let reason = match &self.previous {
                None => "prev_hash of the first entry is not the zero hash: entries before it \
                         were removed"
                    .to_string(),
                Some((previous, _)) => format!(
                    "prev_hash is not the hash of the previous entry (id {previous}): an entry \
                     was removed, inserted or rewritten"
                ),
            };
            self.broken = Some((id, reason));
            return;
        }
        let hash = audit_hash(
            &event.prev_hash,
            event.at,
            &event.actor,
            &event.action,
            &event.target,
            &event.detail,
        );
        if hash != event.hash {
            self.broken = Some((
                id,
                "hash does not match the entry's content: the entry was altered".to_string(),
            ));
            return;
        }
        self.previous = Some((id, event.hash));
    }

    pub fn finish(self) -> AuditVerification {
        let (first_broken_id, reason) = match self.broken {
            Some((id, reason)) => (Some(id), Some(reason)),
            None => (None, None),
        };
        AuditVerification {
            events: self.events,
            first_broken_id,
            reason,
        }
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
        let opens: Vec<(&str, bool)> = plan
            .upsert
            .iter()
            .map(|u| (u.finding.rule_id.as_str(), u.opens))
            .collect();
        assert_eq!(opens, [("A", false), ("C", true), ("E", true)]);
        assert_eq!(plan.opened, 2, "E is new, C reopens, A stays open");
        assert!(plan.recount, "two open findings become three");
    }

    #[test]
    fn plan_recounts_when_the_open_or_delegation_findings_change_in_number() {
        let existing = [
            old(1, DELEGATION_RULE, "0", "open"),
            old(2, "KMS-PUBLIC", "0", "resolved"),
        ];
        let recount = |current: &[NewFinding]| plan_findings(&existing, current).recount;
        assert!(!recount(&[new(DELEGATION_RULE, "0")]), "unchanged");
        assert!(
            !recount(&[new(DELEGATION_RULE, "1")]),
            "another KMS-DELEGATION finding instead: the same counts"
        );
        assert!(
            recount(&[new("KMS-PUBLIC", "0")]),
            "as many open findings, none delegating"
        );
        assert!(recount(&[]), "fixed");
        assert!(
            !plan_findings(&[], &[]).recount,
            "a new key without findings"
        );
        assert!(plan_findings(&[], &[new("KMS-PUBLIC", "0")]).recount);
    }

    fn live(region: &str, keys: u64) -> LiveKeys {
        LiveKeys {
            account_id: "1".into(),
            region: region.into(),
            keys,
        }
    }

    fn open_keys(region: &str, keys: u64, findings: u64, delegating_keys: u64) -> OpenKeys {
        OpenKeys {
            account_id: "1".into(),
            region: region.into(),
            keys,
            findings,
            delegating_keys,
        }
    }

    /// Finding `id` of key `key` in `region`, which has `key_open` open findings of which
    /// `key_delegation` are KMS-DELEGATION.
    fn waived(
        id: i64,
        key: &str,
        region: &str,
        rule: &str,
        key_open: u64,
        key_delegation: u64,
    ) -> WaivedFinding {
        WaivedFinding {
            id,
            key_arn: key.into(),
            account_id: "1".into(),
            region: region.into(),
            rule_id: rule.into(),
            severity: if rule == DELEGATION_RULE {
                "high"
            } else {
                "low"
            }
            .into(),
            key_open,
            key_delegation,
        }
    }

    fn compliance(
        region: &str,
        keys: u64,
        compliant_keys: u64,
        open_findings: u64,
        delegating_keys: u64,
    ) -> RegionCompliance {
        RegionCompliance {
            account_id: "1".into(),
            region: region.into(),
            keys,
            compliant_keys,
            open_findings,
            delegating_keys,
        }
    }

    fn rule(rule: &str, severity: &str, n: u64) -> (String, String, u64) {
        (rule.into(), severity.into(), n)
    }

    /// Region `r` holds 10 live keys: `a` with KMS-DELEGATION and KMS-ROTATION, `b` with two
    /// KMS-DELEGATION findings, `c` with KMS-ROTATION; region `s` 5 keys, none with findings.
    fn figures_with(waived: &[WaivedFinding]) -> StoreResult<ComplianceFigures> {
        combine_figures(
            vec![live("r", 10), live("s", 5)],
            vec![open_keys("r", 3, 5, 2)],
            vec![
                rule(DELEGATION_RULE, "high", 3),
                rule("KMS-ROTATION", "low", 2),
            ],
            waived,
        )
    }

    #[test]
    fn figures_without_waivers_are_the_stored_counts() {
        let figures = figures_with(&[]).expect("figures");
        assert_eq!(
            figures.regions,
            vec![compliance("r", 10, 7, 5, 2), compliance("s", 5, 5, 0, 0)],
            "in the order of the live keys; a region without findings is compliant"
        );
        assert_eq!(
            figures.stats,
            StoreStats {
                keys_compliant: 12,
                keys_noncompliant: 3,
                open_findings: vec![
                    rule(DELEGATION_RULE, "high", 3),
                    rule("KMS-ROTATION", "low", 2)
                ],
            }
        );
    }

    #[test]
    fn a_waived_finding_leaves_its_key_noncompliant_while_others_are_open() {
        // a's KMS-ROTATION, by a finding-level waiver: a still has KMS-DELEGATION.
        let figures = figures_with(&[waived(2, "a", "r", "KMS-ROTATION", 2, 1)]).expect("figures");
        assert_eq!(figures.regions[0], compliance("r", 10, 7, 4, 2));
        assert_eq!(
            figures.stats.open_findings,
            vec![
                rule(DELEGATION_RULE, "high", 3),
                rule("KMS-ROTATION", "low", 1)
            ]
        );
    }

    #[test]
    fn a_key_whose_open_findings_are_all_waived_is_compliant() {
        // c's only finding (an account-level waiver on KMS-ROTATION also covers a's), and
        // both of a's (its KMS-DELEGATION by a finding-level waiver).
        let figures = figures_with(&[
            waived(5, "c", "r", "KMS-ROTATION", 1, 0),
            waived(2, "a", "r", "KMS-ROTATION", 2, 1),
            waived(1, "a", "r", DELEGATION_RULE, 2, 1),
        ])
        .expect("figures");
        assert_eq!(figures.regions[0], compliance("r", 10, 9, 2, 1));
        assert_eq!(
            (
                figures.stats.keys_compliant,
                figures.stats.keys_noncompliant
            ),
            (14, 1)
        );
        assert_eq!(
            figures.stats.open_findings,
            vec![rule(DELEGATION_RULE, "high", 2)],
            "a rule whose every open finding is waived is left out"
        );
    }

    #[test]
    fn a_delegating_key_stops_delegating_once_every_delegation_finding_is_waived() {
        // b has two KMS-DELEGATION findings: one waived, it still delegates; a's one waived, a
        // no longer delegates but stays noncompliant (KMS-ROTATION).
        let one_of_b = figures_with(&[waived(3, "b", "r", DELEGATION_RULE, 2, 2)]).expect("b");
        assert_eq!(one_of_b.regions[0], compliance("r", 10, 7, 4, 2));
        let both_of_b = figures_with(&[
            waived(3, "b", "r", DELEGATION_RULE, 2, 2),
            waived(4, "b", "r", DELEGATION_RULE, 2, 2),
        ])
        .expect("both");
        assert_eq!(both_of_b.regions[0], compliance("r", 10, 8, 3, 1));
        let a = figures_with(&[waived(1, "a", "r", DELEGATION_RULE, 2, 1)]).expect("a");
        assert_eq!(a.regions[0], compliance("r", 10, 7, 4, 1));
    }

    #[test]
    fn a_finding_covered_by_overlapping_waivers_counts_once() {
        // c's finding by its key's waiver and by the account's; a's twice as well.
        let figures = figures_with(&[
            waived(5, "c", "r", "KMS-ROTATION", 1, 0),
            waived(2, "a", "r", "KMS-ROTATION", 2, 1),
            waived(5, "c", "r", "KMS-ROTATION", 1, 0),
            waived(2, "a", "r", "KMS-ROTATION", 2, 1),
        ])
        .expect("figures");
        assert_eq!(figures.regions[0], compliance("r", 10, 8, 3, 2));
        assert_eq!(
            figures.stats.open_findings,
            vec![rule(DELEGATION_RULE, "high", 3)]
        );
    }

    #[test]
    fn waived_counts_above_the_stored_ones_are_corrupt() {
        // More waived findings than the key has open.
        let too_many = figures_with(&[
            waived(5, "c", "r", "KMS-ROTATION", 1, 0),
            waived(6, "c", "r", "KMS-ROTATION", 1, 0),
        ]);
        assert!(
            matches!(too_many, Err(StoreError::Corrupt(_))),
            "{too_many:?}"
        );
        // A waived finding in a region whose keys have no open findings.
        let elsewhere = figures_with(&[waived(9, "z", "s", "KMS-ROTATION", 1, 0)]);
        assert!(
            matches!(elsewhere, Err(StoreError::Corrupt(_))),
            "{elsewhere:?}"
        );
        // Open findings in a region without live keys.
        let orphan = combine_figures(vec![], vec![open_keys("r", 1, 1, 0)], vec![], &[]);
        assert!(matches!(orphan, Err(StoreError::Corrupt(_))), "{orphan:?}");
    }

    #[test]
    fn contains_pattern_escapes_like_wildcards_and_folds_ascii() {
        assert_eq!(contains_pattern("Team_50%"), r"%team\_50\%%");
        assert_eq!(contains_pattern(r"a\b"), r"%a\\b%");
        assert_eq!(contains_pattern("ÉTÉ"), "%ÉtÉ%");
        assert_eq!(contains_pattern(""), "%%");
    }

    #[test]
    fn paged_query_numbers_cursor_and_limit_after_the_filter() {
        let filter = KeyFilter {
            account: Some("1".into()),
            q: Some("x".into()),
            ..KeyFilter::default()
        };
        let query = PagedQuery::new(
            "SELECT * FROM keys k",
            "keys k",
            key_conditions(&filter, Dialect::Postgres, chrono::Utc::now()),
            Some(("k.arn", Arg::Text("after".into()))),
            "k.arn",
            10,
        );
        assert_eq!(query.count_args.len(), 3, "now, account, q");
        assert!(query.count_sql.contains("k.account_id = $2"));
        assert!(!query.count_sql.contains("$4"));
        assert!(
            query
                .page_sql
                .ends_with("AND k.arn > $4 ORDER BY k.arn LIMIT $5")
        );
        assert_eq!(
            query.page_args[3..],
            [Arg::Text("after".into()), Arg::Int(10)]
        );
        let everything = key_conditions(
            &KeyFilter {
                include_deleted: true,
                ..KeyFilter::default()
            },
            Dialect::Sqlite,
            chrono::Utc::now(),
        );
        assert_eq!(everything.where_clause(), "");
    }

    #[test]
    fn delivery_ids_are_version_4_uuids() {
        let id = new_delivery_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, new_delivery_id());
    }

    #[test]
    fn token_use_is_stamped_at_most_once_a_minute() {
        let now = chrono::Utc::now();
        assert!(stamp_due(None, now));
        assert!(!stamp_due(Some(now - TOKEN_USE_INTERVAL), now));
        assert!(stamp_due(
            Some(now - TOKEN_USE_INTERVAL - chrono::TimeDelta::microseconds(1)),
            now
        ));
        assert!(!stamp_due(Some(now + TOKEN_USE_INTERVAL), now));
    }

    #[test]
    fn chained_entries_keep_microseconds() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("valid time");
        let event = NewAuditEvent {
            at,
            actor: "a".into(),
            action: "b".into(),
            target: "c".into(),
            detail: "{}".into(),
        };
        let first = chain_audit(None, &event);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(first.at.timestamp_subsec_nanos(), 123_456_000);
        let second = chain_audit(Some(first.hash.clone()), &event);
        assert_eq!(second.prev_hash, first.hash);
        assert_ne!(second.hash, first.hash);
        let mut check = ChainCheck::new();
        check.check(1, Ok(first));
        check.check(2, Ok(second.clone()));
        check.check(3, Ok(second));
        let report = check.finish();
        assert_eq!((report.events, report.first_broken_id), (3, Some(3)));
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
            unread: vec!["b".into()],
        };
        let l = listed(&sync);
        assert_eq!(l.stamp, vec!["a", "b"]);
        assert_eq!(l.present, vec!["a", "b"]);
        assert_eq!(l.policy_stamp, vec!["a"]);
    }
}
