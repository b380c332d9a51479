//! The Postgres store: for teams and for several `keyward serve` replicas on one database, which
//! share the work through lease rows claimed with `FOR UPDATE SKIP LOCKED`.

use super::common::snapshot_matches;
use super::common::{
    AUDIT_BATCH, Arg, AttemptColumns, CHANGE_MARKER_SQL, COUNT_OPEN_SQL, ChainCheck, Conditions,
    DELIVERY_COLUMNS, Dialect, ExistingFinding, FINDING_COLUMNS, FindingEvent, LIVE_KEYS_SQL,
    LiveKeys, OPEN_BY_RULE_SQL, OPEN_KEYS_SQL, OpenKeys, PagedQuery, REMEDIATION_COLUMNS,
    SESSION_SQL, TOKEN_USE_INTERVAL, Tx, WAIVER_COLUMNS, WaivedFinding, apply_result, chain_audit,
    check_approval, check_rejection, combine_figures, count, db_err, expiry_audit,
    finding_conditions, findings_from, from_json, http_status, key_conditions, key_order, listed,
    migrate_err, new_delivery_id, open_findings_column, plan_findings, remediation_payload,
    rolled_back_audit, run_status, stamp_due, state_placeholders, subscribed, sync_failed_payload,
    to_i64, to_json, waived_open_sql,
};
use super::{
    AccountRow, ApplyResult, ApprovalRow, AuditEvent, AuditVerification, ChangeMarker,
    ClaimedDelivery, ComplianceFigures, DailySnapshot, DeliveryAttempt, DeliveryRow, FindingFilter,
    FindingRow, IamInventoryRow, KeyFilter, KeyFingerprint, KeyRecord, KeyRow, KeySort, KeyUpdate,
    NewAuditEvent, NewRemediation, NewSession, NewToken, NewWaiver, OutboxEvent, PolicyState,
    PolicyVersionRow, RegionSync, RegionSyncOutcome, RemediationRow, SessionRow, Store, StoreError,
    StoreResult, SyncRunFinish, SyncRunRow, TokenRow, WaiverRow, WaiverScope, WebhookSubscription,
    events, remediation_state,
};
use crate::clock::{Clock, SystemClock};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The embedded Postgres migrations.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Enough for the sync's default concurrency of 16 plus the web server's reads.
const MAX_CONNECTIONS: u32 = 24;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLSTATE invalid_catalog_name: the database named in the URL does not exist.
const NO_SUCH_DATABASE: &str = "3D000";
/// SQLSTATE duplicate_database: another replica created it first.
const DUPLICATE_DATABASE: &str = "42P04";

/// The transaction-scoped advisory lock that serialises audit appenders across replicas
/// ("kwaudit" in ASCII); nothing else takes it.
const AUDIT_LOCK: i64 = 0x006b_7761_7564_6974;

/// A snapshot for reads that must agree with each other (a page and its total).
const READ_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// [`Store`] on a Postgres database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// "Now" for reads: whether a waiver still covers a finding.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(db_err)
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

impl PostgresStore {
    /// Connects to the database a `postgres:` URL names, creating the database if missing.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(db_err)?;
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
        };
        let pool = match pool_options().connect_with(options.clone()).await {
            Ok(pool) => pool,
            Err(err) if sqlstate(&err).as_deref() == Some(NO_SUCH_DATABASE) => {
                match Postgres::create_database(url).await {
                    Ok(()) => {}
                    Err(err) if sqlstate(&err).as_deref() == Some(DUPLICATE_DATABASE) => {}
                    Err(err) => return Err(db_err(err)),
                }
                pool_options().connect_with(options).await.map_err(db_err)?
            }
            Err(err) => return Err(db_err(err)),
        };
        Ok(Self {
            pool,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same store, judging waiver expiry against `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }
}

/// The key columns, with the open-finding count as of the placeholder `now`.
fn key_columns(now: &str) -> String {
    format!(
        "k.arn, k.account_id, k.region, k.key_id, k.description, \
         k.key_manager, k.key_state, k.key_spec, k.key_usage, k.origin, k.multi_region, \
         k.creation_date, k.deletion_date, k.rotation_enabled, k.aliases, k.tags::text AS tags, \
         k.grants::text AS grants, k.metadata::text AS metadata, k.policy_sha256, k.policy_error, k.remediable, k.first_seen, \
         k.last_seen, k.deleted_at, {}",
        open_findings_column(now)
    )
}

fn key_row(row: &PgRow) -> StoreResult<KeyRow> {
    Ok(KeyRow {
        key: KeyRecord {
            arn: get(row, "arn")?,
            account_id: get(row, "account_id")?,
            region: get(row, "region")?,
            key_id: get(row, "key_id")?,
            description: get(row, "description")?,
            key_manager: get(row, "key_manager")?,
            key_state: get(row, "key_state")?,
            key_spec: get(row, "key_spec")?,
            key_usage: get(row, "key_usage")?,
            origin: get(row, "origin")?,
            multi_region: get(row, "multi_region")?,
            creation_date: get(row, "creation_date")?,
            deletion_date: get(row, "deletion_date")?,
            rotation_enabled: get(row, "rotation_enabled")?,
            aliases: get(row, "aliases")?,
            tags: from_json("tags", &get::<String>(row, "tags")?)?,
            grants: from_json("grants", &get::<String>(row, "grants")?)?,
            metadata: from_json("metadata", &get::<String>(row, "metadata")?)?,
        },
        policy_sha256: get(row, "policy_sha256")?,
        policy_error: get(row, "policy_error")?,
        remediable: get(row, "remediable")?,
        open_findings: count("open_findings", get(row, "open_findings")?)?,
        first_seen: get(row, "first_seen")?,
        last_seen: get(row, "last_seen")?,
        deleted_at: get(row, "deleted_at")?,
    })
}

fn finding_row(row: &PgRow) -> StoreResult<FindingRow> {
    let status: String = get(row, "status")?;
    let stored_status: String = get(row, "stored_status")?;
    let mut last_seen: DateTime<Utc> = get(row, "last_seen")?;
    let key_deleted_at: Option<DateTime<Utc>> = get(row, "key_deleted_at")?;
    // An unchanged re-sync stamps only the key; the finding is as fresh as its key.
    if stored_status == "open" && key_deleted_at.is_none() {
        last_seen = last_seen.max(get(row, "key_last_seen")?);
    }
    Ok(FindingRow {
        id: get(row, "id")?,
        key_arn: get(row, "key_arn")?,
        account_id: get(row, "account_id")?,
        region: get(row, "region")?,
        rule_id: get(row, "rule_id")?,
        locator: get(row, "locator")?,
        severity: get(row, "severity")?,
        status,
        statement_index: get(row, "statement_index")?,
        sid: get(row, "sid")?,
        message: get(row, "message")?,
        policy_sha256: get(row, "policy_sha256")?,
        first_seen: get(row, "first_seen")?,
        last_seen,
        resolved_at: get(row, "resolved_at")?,
        waiver_id: get(row, "waiver_id")?,
        waiver_reason: get(row, "waiver_reason")?,
        waiver_expires_at: get(row, "waiver_expires_at")?,
        ticket: get(row, "ticket")?,
    })
}

/// Reads one finding as of `now` on the caller's connection.
async fn finding_at(
    conn: &mut PgConnection,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<Option<FindingRow>> {
    sqlx::query(&format!(
        "SELECT {FINDING_COLUMNS} FROM {} WHERE f.id = $2",
        findings_from("$1")
    ))
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    .as_ref()
    .map(finding_row)
    .transpose()
}

fn waiver_row(row: &PgRow) -> StoreResult<WaiverRow> {
    Ok(WaiverRow {
        id: get(row, "id")?,
        key_arn: get(row, "key_arn")?,
        account_id: get(row, "account_id")?,
        rule_id: get(row, "rule_id")?,
        reason: get(row, "reason")?,
        author: get(row, "author")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        revoked_by: get(row, "revoked_by")?,
    })
}

fn delivery_row(row: &PgRow) -> StoreResult<DeliveryRow> {
    let attempts: i32 = get(row, "attempts")?;
    Ok(DeliveryRow {
        seq: get(row, "seq")?,
        id: get(row, "id")?,
        outbox_id: get(row, "outbox_id")?,
        webhook: get(row, "webhook")?,
        event: get(row, "event")?,
        status: get(row, "status")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("attempts {attempts} out of range")))?,
        created_at: get(row, "created_at")?,
        next_attempt_at: get(row, "next_attempt_at")?,
        last_status: http_status(get(row, "last_status")?)?,
        last_error: get(row, "last_error")?,
        delivered_at: get(row, "delivered_at")?,
    })
}

/// Appends an event to the outbox on the caller's connection (inside its transaction).
async fn insert_outbox(
    conn: &mut PgConnection,
    event: &str,
    payload: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO outbox (event, payload, created_at) VALUES ($1, $2, $3)")
        .bind(event)
        .bind(payload)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// What `RETURNING` gives back of a finding whose status the sync changed.
const EVENT_RETURNING: &str = "id, key_arn, rule_id, locator, severity, status, message, ticket, \
    first_seen, last_seen, resolved_at";

/// A finding the sync opened or resolved, as its outbox event.
fn finding_event(row: &PgRow, account_id: &str, region: &str) -> StoreResult<FindingEvent> {
    Ok(FindingEvent {
        id: get(row, "id")?,
        key_arn: get(row, "key_arn")?,
        account_id: account_id.to_string(),
        region: region.to_string(),
        rule_id: get(row, "rule_id")?,
        locator: get(row, "locator")?,
        severity: get(row, "severity")?,
        status: get(row, "status")?,
        message: get(row, "message")?,
        ticket: get(row, "ticket")?,
        first_seen: get(row, "first_seen")?,
        last_seen: get(row, "last_seen")?,
        resolved_at: get(row, "resolved_at")?,
    })
}

/// Appends to the audit chain inside the caller's transaction. The advisory lock is held from
/// the read of the last hash to the commit: appenders on every replica chain one after the
/// other, and ids grow along the chain.
async fn append_audit_in(
    conn: &mut PgConnection,
    event: &NewAuditEvent,
) -> StoreResult<AuditEvent> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    let prev_hash: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    let mut entry = chain_audit(prev_hash, event);
    entry.id = sqlx::query_scalar(
        "INSERT INTO audit_events (at, actor, action, target, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(entry.at)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.detail)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(entry)
}

const TOKEN_COLUMNS: &str = "id, name, role, created_at, last_used_at, revoked_at";

fn token_row(row: &PgRow) -> StoreResult<TokenRow> {
    Ok(TokenRow {
        id: get(row, "id")?,
        name: get(row, "name")?,
        role: get(row, "role")?,
        created_at: get(row, "created_at")?,
        last_used_at: get(row, "last_used_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

const AUDIT_COLUMNS: &str = "id, at, actor, action, target, detail, prev_hash, hash";

fn audit_row(row: &PgRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        id: get(row, "id")?,
        at: get(row, "at")?,
        actor: get(row, "actor")?,
        action: get(row, "action")?,
        target: get(row, "target")?,
        detail: get(row, "detail")?,
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// Binds a dynamic query's values in placeholder order.
fn bind_args<'q>(mut query: Query<'q>, args: &'q [Arg]) -> Query<'q> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Int(n) => query.bind(*n),
            Arg::Time(t) => query.bind(*t),
        };
    }
    query
}

/// Reads a page and its total in one snapshot, so that they agree.
async fn page_and_total<T>(
    pool: &PgPool,
    query: &PagedQuery,
    decode: fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<(Vec<T>, u64)> {
    let mut tx = Tx::<Postgres>::begin(pool, READ_SNAPSHOT).await?;
    let result = async {
        let rows = bind_args(sqlx::query(&query.page_sql), &query.page_args)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(decode)
            .collect::<StoreResult<Vec<T>>>()?;
        let total = bind_args(sqlx::query(&query.count_sql), &query.count_args)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok((rows, count("total", get(&total, "n")?)?))
    }
    .await;
    tx.finish(result).await
}

const RUN_COLUMNS: &str = "id, account_id, region, started_at, finished_at, status, keys_seen, \
    keys_changed, policy_versions_added, findings_opened, findings_resolved, keys_deleted, error, \
    iam_error";

fn run_row(row: &PgRow) -> StoreResult<SyncRunRow> {
    let n = |column: &str| -> StoreResult<u64> { count(column, get(row, column)?) };
    Ok(SyncRunRow {
        id: get(row, "id")?,
        account_id: get(row, "account_id")?,
        region: get(row, "region")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        status: get(row, "status")?,
        keys_seen: n("keys_seen")?,
        keys_changed: n("keys_changed")?,
        policy_versions_added: n("policy_versions_added")?,
        findings_opened: n("findings_opened")?,
        findings_resolved: n("findings_resolved")?,
        keys_deleted: n("keys_deleted")?,
        error: get(row, "error")?,
        iam_error: get(row, "iam_error")?,
    })
}

/// An open finding an active waiver covers, as [`waived_open_sql`] reads it.
fn waived_finding(row: &PgRow) -> StoreResult<WaivedFinding> {
    Ok(WaivedFinding {
        id: get(row, "id")?,
        key_arn: get(row, "key_arn")?,
        account_id: get(row, "account_id")?,
        region: get(row, "region")?,
        rule_id: get(row, "rule_id")?,
        severity: get(row, "severity")?,
        key_open: count("key_open", get(row, "key_open")?)?,
        key_delegation: count("key_delegation", get(row, "key_delegation")?)?,
    })
}

/// Writes one changed key: its row, its policy version, its reconciled findings.
async fn apply_key_update(
    conn: &mut PgConnection,
    update: &KeyUpdate,
    now: DateTime<Utc>,
    outcome: &mut RegionSyncOutcome,
) -> StoreResult<()> {
    let key = &update.key;
    let (policy_sha256, policy_error) = match &update.policy {
        PolicyState::Readable { sha256, .. } => (Some(sha256.as_str()), None),
        PolicyState::Unreadable { reason } => (None, Some(reason.as_str())),
    };
    // An unreadable policy keeps the last readable hash: the history stays anchored, and
    // policy_error says the hash may be stale.
    sqlx::query(
        "INSERT INTO keys (arn, account_id, region, key_id, description, key_manager, key_state, \
             key_spec, key_usage, origin, multi_region, creation_date, deletion_date, \
             rotation_enabled, aliases, tags, grants, fingerprint, evaluation, policy_sha256, \
             policy_error, remediable, first_seen, last_seen, deleted_at, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb, \
             $17::jsonb, $18, $19, $20, $21, $22, $23, $23, NULL, $24::jsonb) \
         ON CONFLICT (arn) DO UPDATE SET account_id = excluded.account_id, \
             region = excluded.region, key_id = excluded.key_id, \
             description = excluded.description, key_manager = excluded.key_manager, \
             key_state = excluded.key_state, key_spec = excluded.key_spec, \
             key_usage = excluded.key_usage, origin = excluded.origin, \
             multi_region = excluded.multi_region, creation_date = excluded.creation_date, \
             deletion_date = excluded.deletion_date, \
             rotation_enabled = excluded.rotation_enabled, aliases = excluded.aliases, \
             tags = excluded.tags, grants = excluded.grants, fingerprint = excluded.fingerprint, \
             evaluation = excluded.evaluation, \
             policy_sha256 = COALESCE(excluded.policy_sha256, keys.policy_sha256), \
             policy_error = excluded.policy_error, remediable = excluded.remediable, \
             last_seen = excluded.last_seen, deleted_at = NULL, metadata = excluded.metadata",
    )
    .bind(&key.arn)
    .bind(&key.account_id)
    .bind(&key.region)
    .bind(&key.key_id)
    .bind(&key.description)
    .bind(&key.key_manager)
    .bind(&key.key_state)
    .bind(&key.key_spec)
    .bind(&key.key_usage)
    .bind(&key.origin)
    .bind(key.multi_region)
    .bind(key.creation_date)
    .bind(key.deletion_date)
    .bind(key.rotation_enabled)
    .bind(&key.aliases)
    .bind(to_json(&key.tags)?)
    .bind(to_json(&key.grants)?)
    .bind(&update.fingerprint)
    .bind(&update.evaluation)
    .bind(policy_sha256)
    .bind(policy_error)
    .bind(update.remediable)
    .bind(now)
    .bind(to_json(&key.metadata)?)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;

    if let PolicyState::Readable { text, sha256 } = &update.policy {
        let current: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, sha256 FROM policy_versions WHERE key_arn = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(&key.arn)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        match current {
            Some((id, current_sha)) if current_sha == *sha256 => {
                sqlx::query("UPDATE policy_versions SET last_seen = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
            }
            _ => {
                sqlx::query(
                    "INSERT INTO policy_versions (key_arn, sha256, text, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(&key.arn)
                .bind(sha256)
                .bind(text)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
                outcome.policy_versions_added += 1;
            }
        }
    }

    let existing: Vec<ExistingFinding> =
        sqlx::query("SELECT id, rule_id, locator, status FROM findings WHERE key_arn = $1")
            .bind(&key.arn)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?
            .iter()
            .map(|row| {
                Ok(ExistingFinding {
                    id: get(row, "id")?,
                    rule_id: get(row, "rule_id")?,
                    locator: get(row, "locator")?,
                    status: get(row, "status")?,
                })
            })
            .collect::<StoreResult<_>>()?;
    let plan = plan_findings(&existing, &update.findings);
    if !plan.resolve.is_empty() {
        let resolved = sqlx::query(&format!(
            "UPDATE findings SET status = 'resolved', resolved_at = $1 \
             WHERE status = 'open' AND id = ANY($2) RETURNING {EVENT_RETURNING}"
        ))
        .bind(now)
        .bind(&plan.resolve)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        for row in &resolved {
            let event = finding_event(row, &key.account_id, &key.region)?;
            insert_outbox(conn, events::FINDING_RESOLVED, &event.payload()?, now).await?;
        }
        outcome.findings_resolved += u64::try_from(resolved.len()).unwrap_or(u64::MAX);
    }
    for upsert in &plan.upsert {
        let finding = upsert.finding;
        let row = sqlx::query(&format!(
            "INSERT INTO findings (key_arn, rule_id, locator, severity, status, statement_index, \
                 sid, message, policy_sha256, first_seen, last_seen, resolved_at, account_id, \
                 region) \
             VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $9, NULL, $10, $11) \
             ON CONFLICT (key_arn, rule_id, locator) DO UPDATE SET \
                 severity = excluded.severity, status = 'open', \
                 account_id = excluded.account_id, region = excluded.region, \
                 statement_index = excluded.statement_index, sid = excluded.sid, \
                 message = excluded.message, policy_sha256 = excluded.policy_sha256, \
                 last_seen = excluded.last_seen, resolved_at = NULL \
             RETURNING {EVENT_RETURNING}"
        ))
        .bind(&key.arn)
        .bind(&finding.rule_id)
        .bind(&finding.locator)
        .bind(&finding.severity)
        .bind(finding.statement_index)
        .bind(&finding.sid)
        .bind(&finding.message)
        .bind(policy_sha256)
        .bind(now)
        .bind(&key.account_id)
        .bind(&key.region)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
        if upsert.opens {
            let event = finding_event(&row, &key.account_id, &key.region)?;
            insert_outbox(conn, events::FINDING_OPENED, &event.payload()?, now).await?;
        }
    }
    outcome.findings_opened += plan.opened;
    if plan.recount {
        // Recounted from the findings while this transaction holds the key's row.
        sqlx::query(COUNT_OPEN_SQL)
            .bind(&key.arn)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Applies one account·region's sync inside the caller's transaction.
async fn apply_region(
    conn: &mut PgConnection,
    sync: &RegionSync,
) -> StoreResult<RegionSyncOutcome> {
    let now = sync.now;
    let listed = listed(sync);
    let mut outcome = RegionSyncOutcome {
        keys_changed: u64::try_from(sync.updates.len()).unwrap_or(u64::MAX),
        ..RegionSyncOutcome::default()
    };
    for update in &sync.updates {
        apply_key_update(&mut *conn, update, now, &mut outcome).await?;
    }
    // Unchanged keys: one batched stamp, nothing else.
    if !listed.stamp.is_empty() {
        sqlx::query(
            "UPDATE keys SET last_seen = $1 WHERE account_id = $2 AND region = $3 \
             AND deleted_at IS NULL AND arn = ANY($4)",
        )
        .bind(now)
        .bind(&sync.account_id)
        .bind(&sync.region)
        .bind(&listed.stamp)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    // Their policies were read and matched the stored hash: the current version was just
    // fetched, so policy_fetched_at in exports stays true.
    if !listed.policy_stamp.is_empty() {
        sqlx::query(
            "UPDATE policy_versions SET last_seen = $1 WHERE id IN (SELECT MAX(pv.id) \
                 FROM policy_versions pv JOIN keys k ON k.arn = pv.key_arn \
                 WHERE k.account_id = $2 AND k.region = $3 AND k.deleted_at IS NULL \
                 AND k.policy_error IS NULL AND k.arn = ANY($4) \
                 GROUP BY pv.key_arn)",
        )
        .bind(now)
        .bind(&sync.account_id)
        .bind(&sync.region)
        .bind(&listed.policy_stamp)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    if sync.listing_complete {
        let resolved = sqlx::query(&format!(
            "UPDATE findings SET status = 'resolved', resolved_at = $1 \
             WHERE status = 'open' AND key_arn IN (SELECT arn FROM keys \
                 WHERE account_id = $2 AND region = $3 AND deleted_at IS NULL \
                 AND NOT (arn = ANY($4))) \
             RETURNING {EVENT_RETURNING}"
        ))
        .bind(now)
        .bind(&sync.account_id)
        .bind(&sync.region)
        .bind(&listed.present)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        for row in &resolved {
            let event = finding_event(row, &sync.account_id, &sync.region)?;
            insert_outbox(conn, events::FINDING_RESOLVED, &event.payload()?, now).await?;
        }
        outcome.findings_resolved += u64::try_from(resolved.len()).unwrap_or(u64::MAX);
        let deleted = sqlx::query(
            "UPDATE keys SET deleted_at = $1, open_count = 0, delegation_count = 0 \
             WHERE account_id = $2 AND region = $3 \
             AND deleted_at IS NULL AND NOT (arn = ANY($4))",
        )
        .bind(now)
        .bind(&sync.account_id)
        .bind(&sync.region)
        .bind(&listed.present)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        outcome.keys_deleted = deleted.rows_affected();
    }
    Ok(outcome)
}

fn remediation_row(row: &PgRow, approvals: Vec<ApprovalRow>) -> StoreResult<RemediationRow> {
    let diff: String = get(row, "diff")?;
    let resolves: String = get(row, "resolves")?;
    let remaining: String = get(row, "remaining")?;
    Ok(RemediationRow {
        id: get(row, "id")?,
        key_arn: get(row, "key_arn")?,
        account_id: get(row, "account_id")?,
        region: get(row, "region")?,
        state: get(row, "state")?,
        requester: get(row, "requester")?,
        ticket: get(row, "ticket")?,
        comment: get(row, "comment")?,
        base_policy: get(row, "base_policy")?,
        base_sha256: get(row, "base_sha256")?,
        proposed_policy: get(row, "proposed_policy")?,
        proposed_sha256: get(row, "proposed_sha256")?,
        diff: from_json("diff", &diff)?,
        resolves: from_json("resolves", &resolves)?,
        remaining: from_json("remaining", &remaining)?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        expires_at: get(row, "expires_at")?,
        applied_at: get(row, "applied_at")?,
        error: get(row, "error")?,
        rollback_of: get(row, "rollback_of")?,
        impact: get::<Option<String>>(row, "impact")?
            .map(|text| from_json("impact", &text))
            .transpose()?,
        idempotency_key: get(row, "idempotency_key")?,
        claimed_by: get(row, "claimed_by")?,
        claimed_at: get(row, "claimed_at")?,
        approvals,
    })
}

/// A remediation with its approvals, on the caller's connection.
async fn remediation_in(conn: &mut PgConnection, id: i64) -> StoreResult<Option<RemediationRow>> {
    let Some(row) = sqlx::query(&format!(
        "SELECT {REMEDIATION_COLUMNS} FROM remediations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    else {
        return Ok(None);
    };
    let approvals = sqlx::query(
        "SELECT approver, comment, created_at FROM remediation_approvals \
         WHERE remediation_id = $1 ORDER BY created_at, approver",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?
    .iter()
    .map(|a| {
        Ok(ApprovalRow {
            approver: get(a, "approver")?,
            comment: get(a, "comment")?,
            created_at: get(a, "created_at")?,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    remediation_row(&row, approvals).map(Some)
}

async fn existing_remediation(conn: &mut PgConnection, id: i64) -> StoreResult<RemediationRow> {
    remediation_in(conn, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("remediation {id}")))
}

/// Locks a remediation's row until the caller's transaction ends and reads it: a check made on
/// an unlocked read (READ COMMITTED) could be overtaken by another writer before the update.
async fn lock_remediation(conn: &mut PgConnection, id: i64) -> StoreResult<RemediationRow> {
    sqlx::query("SELECT id FROM remediations WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NotFound(format!("remediation {id}")))?;
    existing_remediation(conn, id).await
}

/// Moves a remediation from one of the states `from` (and, for a finish, from `claimant`'s
/// claim) to `state`, setting its error, and applied_at when applied, and writes its outbox
/// `event` and `audit`, all on the caller's transaction. `Conflict` when the row is not as
/// expected: the update is conditional, so a transition never overwrites another one.
#[allow(clippy::too_many_arguments)]
async fn transition_in(
    conn: &mut PgConnection,
    id: i64,
    from: &[&str],
    claimant: Option<&str>,
    state: &str,
    error: Option<&str>,
    event: &str,
    now: DateTime<Utc>,
    audit: &NewAuditEvent,
) -> StoreResult<RemediationRow> {
    let sql = format!(
        "UPDATE remediations SET state = $1, error = COALESCE($2, error), updated_at = $3, \
         applied_at = CASE WHEN $1 = 'applied' THEN $3 ELSE applied_at END \
         WHERE id = $4 AND ($5::TEXT IS NULL OR COALESCE(claimed_by, '') = $5) \
         AND state IN ({})",
        state_placeholders(6, from)
    );
    let mut update = sqlx::query(&sql)
        .bind(state)
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(claimant);
    for s in from {
        update = update.bind(*s);
    }
    let changed = update
        .execute(&mut *conn)
        .await
        .map_err(db_err)?
        .rows_affected();
    if changed != 1 {
        let current = existing_remediation(conn, id).await?;
        return Err(StoreError::Conflict(format!(
            "remediation {id} is {}, not {}{}",
            current.state,
            from.join(" or "),
            claimant.map_or(String::new(), |c| format!(" under claim {c}"))
        )));
    }
    let after = existing_remediation(conn, id).await?;
    insert_outbox(conn, event, &remediation_payload(&after)?, now).await?;
    append_audit_in(conn, audit).await?;
    Ok(after)
}

#[async_trait]
impl Store for PostgresStore {
    async fn change_marker(&self, now: DateTime<Utc>) -> StoreResult<ChangeMarker> {
        let row = sqlx::query(CHANGE_MARKER_SQL)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(ChangeMarker {
            last_sync_run: get(&row, "last_sync_run")?,
            running_sync_runs: count("running", get(&row, "running")?)?,
            last_waiver: get(&row, "last_waiver")?,
            revoked_waivers: count("revoked", get(&row, "revoked")?)?,
            next_waiver_expiry: get(&row, "next_expiry")?,
        })
    }

    async fn audit_for_target(&self, target: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE target = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(target)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(audit_row)
        .collect()
    }

    async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_sha256, actor, role, token_name, csrf_token, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&session.id_sha256)
        .bind(&session.actor)
        .bind(&session.role)
        .bind(&session.token_name)
        .bind(&session.csrf_token)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_session(
        &self,
        id_sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRow>> {
        sqlx::query(SESSION_SQL)
            .bind(id_sha256)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(|row| {
                Ok(SessionRow {
                    actor: get(&row, "actor")?,
                    role: get(&row, "role")?,
                    token_name: get(&row, "token_name")?,
                    csrf_token: get(&row, "csrf_token")?,
                    created_at: get(&row, "created_at")?,
                    expires_at: get(&row, "expires_at")?,
                })
            })
            .transpose()
    }

    async fn delete_session(&self, id_sha256: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_sha256 = $1")
            .bind(id_sha256)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn compliance_figures(&self) -> StoreResult<ComplianceFigures> {
        // One snapshot, so the counts agree with each other.
        let now = self.clock.now();
        let mut tx = Tx::<Postgres>::begin(&self.pool, READ_SNAPSHOT).await?;
        let result = async {
            let live = sqlx::query(LIVE_KEYS_SQL)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(|row| {
                    Ok(LiveKeys {
                        account_id: get(row, "account_id")?,
                        region: get(row, "region")?,
                        keys: count("n", get(row, "n")?)?,
                    })
                })
                .collect::<StoreResult<_>>()?;
            let open = sqlx::query(OPEN_KEYS_SQL)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(|row| {
                    Ok(OpenKeys {
                        account_id: get(row, "account_id")?,
                        region: get(row, "region")?,
                        keys: count("n", get(row, "n")?)?,
                        findings: count("findings", get(row, "findings")?)?,
                        delegating_keys: count("delegating", get(row, "delegating")?)?,
                    })
                })
                .collect::<StoreResult<_>>()?;
            let by_rule = sqlx::query(OPEN_BY_RULE_SQL)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(|row| {
                    Ok((
                        get(row, "rule_id")?,
                        get(row, "severity")?,
                        count("n", get(row, "n")?)?,
                    ))
                })
                .collect::<StoreResult<_>>()?;
            let waived = sqlx::query(&waived_open_sql())
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(waived_finding)
                .collect::<StoreResult<Vec<_>>>()?;
            combine_figures(live, open, by_rule, &waived)
        }
        .await;
        tx.finish(result).await
    }

    async fn record_daily_snapshot(&self, day: NaiveDate, now: DateTime<Utc>) -> StoreResult<()> {
        let regions = self.compliance_by_region().await?;
        // Every pass records the day; only figures that moved are worth a write.
        if snapshot_matches(day, &self.daily_snapshots(day).await?, &regions) {
            return Ok(());
        }
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            sqlx::query("DELETE FROM daily_snapshots WHERE day = $1")
                .bind(day)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            for r in &regions {
                sqlx::query(
                    "INSERT INTO daily_snapshots (day, account_id, region, keys, compliant_keys, \
                         open_findings, delegating_keys, recorded_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(day)
                .bind(&r.account_id)
                .bind(&r.region)
                .bind(to_i64(r.keys))
                .bind(to_i64(r.compliant_keys))
                .bind(to_i64(r.open_findings))
                .bind(to_i64(r.delegating_keys))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            Ok(())
        }
        .await;
        tx.finish(result).await
    }

    async fn daily_snapshots(&self, since: NaiveDate) -> StoreResult<Vec<DailySnapshot>> {
        sqlx::query(
            "SELECT day, account_id, region, keys, compliant_keys, open_findings, \
                 delegating_keys FROM daily_snapshots WHERE day >= $1 \
             ORDER BY day, account_id, region",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|row| {
            let n = |column: &str| -> StoreResult<u64> { count(column, get(row, column)?) };
            Ok(DailySnapshot {
                day: get(row, "day")?,
                account_id: get(row, "account_id")?,
                region: get(row, "region")?,
                keys: n("keys")?,
                compliant_keys: n("compliant_keys")?,
                open_findings: n("open_findings")?,
                delegating_keys: n("delegating_keys")?,
            })
        })
        .collect()
    }

    async fn query_keys_sorted(
        &self,
        filter: &KeyFilter,
        sort: KeySort,
        descending: bool,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<KeyRow>, u64)> {
        // key_conditions binds "now" first: $1.
        let query = PagedQuery::sorted(
            &format!("SELECT {} FROM keys k", key_columns("$1")),
            "keys k",
            key_conditions(filter, Dialect::Postgres, self.clock.now()),
            &key_order(sort, descending, Dialect::Postgres),
            offset,
            limit,
        );
        page_and_total(&self.pool, &query, key_row).await
    }

    async fn save_iam_inventory(
        &self,
        account_id: &str,
        sha256: &str,
        inventory: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let stored: Option<(Option<String>, bool)> = sqlx::query_as(
                "SELECT sha256, last_error IS NOT NULL FROM iam_inventories WHERE account_id = $1",
            )
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let (previous, had_error) = stored.unzip();
            let had_error = had_error.unwrap_or(false);
            let changed = previous.flatten().as_deref() != Some(sha256);
            if !changed && !had_error {
                // Nothing to write: an unchanged re-sync writes no IAM row. When it was last
                // checked is read from the sync runs (see `iam_inventory`).
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO iam_inventories (account_id, sha256, inventory, fetched_at, \
                     changed_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (account_id) DO UPDATE SET fetched_at = excluded.fetched_at, \
                     last_error = NULL, last_error_at = NULL, \
                     sha256 = CASE WHEN $5 THEN excluded.sha256 ELSE iam_inventories.sha256 END, \
                     inventory = CASE WHEN $5 THEN excluded.inventory \
                         ELSE iam_inventories.inventory END, \
                     changed_at = CASE WHEN $5 THEN excluded.changed_at \
                         ELSE iam_inventories.changed_at END",
            )
            .bind(account_id)
            .bind(sha256)
            .bind(inventory)
            .bind(now)
            .bind(changed)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(changed)
        }
        .await;
        tx.finish(result).await
    }

    async fn record_iam_error(
        &self,
        account_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO iam_inventories (account_id, last_error, last_error_at) \
             VALUES ($1, $2, $3) ON CONFLICT (account_id) DO UPDATE \
             SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
        )
        .bind(account_id)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn iam_inventory(&self, account_id: &str) -> StoreResult<Option<IamInventoryRow>> {
        sqlx::query(
            // An unchanged inventory is not rewritten, so fetched_at alone would say when it
            // last changed: the account's latest finished sync run read IAM successfully when
            // its iam_error is empty, and that is when the inventory was last checked.
            "SELECT i.account_id, i.sha256, i.inventory, \
                 CASE WHEN i.fetched_at IS NULL THEN NULL \
                     ELSE GREATEST(i.fetched_at, r.checked_at) END AS fetched_at, \
                 i.changed_at, i.last_error, i.last_error_at \
             FROM iam_inventories i LEFT JOIN (SELECT CASE WHEN iam_error IS NULL \
                     THEN started_at END AS checked_at FROM sync_runs \
                 WHERE account_id = $1 AND finished_at IS NOT NULL \
                 ORDER BY id DESC LIMIT 1) r ON TRUE \
             WHERE i.account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .map(|row| {
            Ok(IamInventoryRow {
                account_id: get(&row, "account_id")?,
                sha256: get(&row, "sha256")?,
                inventory: get(&row, "inventory")?,
                fetched_at: get(&row, "fetched_at")?,
                changed_at: get(&row, "changed_at")?,
                last_error: get(&row, "last_error")?,
                last_error_at: get(&row, "last_error_at")?,
            })
        })
        .transpose()
    }

    async fn key_policies(&self, account_id: Option<&str>) -> StoreResult<Vec<(KeyRow, String)>> {
        sqlx::query(&format!(
            "SELECT {}, p.text AS policy_text FROM keys k \
             JOIN policy_versions p ON p.key_arn = k.arn AND p.sha256 = k.policy_sha256 \
             WHERE k.deleted_at IS NULL AND ($2 IS NULL OR k.account_id = $2) ORDER BY k.arn",
            key_columns("$1")
        ))
        .bind(self.clock.now())
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|row| Ok((key_row(row)?, get(row, "policy_text")?)))
        .collect()
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await.map_err(migrate_err)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn upsert_accounts(&self, accounts: &[AccountRow]) -> StoreResult<()> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            for account in accounts {
                sqlx::query(
                    "INSERT INTO accounts (id, name, regions) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                         regions = excluded.regions",
                )
                .bind(&account.id)
                .bind(&account.name)
                .bind(&account.regions)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            Ok(())
        }
        .await;
        tx.finish(result).await
    }

    async fn list_accounts(&self) -> StoreResult<Vec<AccountRow>> {
        sqlx::query("SELECT id, name, regions FROM accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(|row| {
                Ok(AccountRow {
                    id: get(row, "id")?,
                    name: get(row, "name")?,
                    regions: get(row, "regions")?,
                })
            })
            .collect()
    }

    async fn key_fingerprints(
        &self,
        account_id: &str,
        region: &str,
    ) -> StoreResult<Vec<KeyFingerprint>> {
        sqlx::query(
            "SELECT arn, fingerprint, policy_sha256, policy_error, evaluation FROM keys \
             WHERE account_id = $1 AND region = $2 AND deleted_at IS NULL ORDER BY arn",
        )
        .bind(account_id)
        .bind(region)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|row| {
            Ok(KeyFingerprint {
                arn: get(row, "arn")?,
                fingerprint: get(row, "fingerprint")?,
                policy_sha256: get(row, "policy_sha256")?,
                policy_error: get(row, "policy_error")?,
                evaluation: get(row, "evaluation")?,
            })
        })
        .collect()
    }

    async fn apply_region_sync(&self, sync: &RegionSync) -> StoreResult<RegionSyncOutcome> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = apply_region(&mut tx, sync).await;
        tx.finish(result).await
    }

    async fn apply_region_sync_fenced(
        &self,
        sync: &RegionSync,
        owner: &str,
    ) -> StoreResult<RegionSyncOutcome> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            // The row lock lasts until commit: a claimer meanwhile skips the row (SKIP LOCKED),
            // so the lease cannot change hands between this check and the write.
            let holder: Option<Option<String>> = sqlx::query_scalar(
                "SELECT owner FROM sync_leases WHERE account_id = $1 AND region = $2 FOR UPDATE",
            )
            .bind(&sync.account_id)
            .bind(&sync.region)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            super::common::check_lease_holder(sync, owner, holder.flatten())?;
            apply_region(&mut tx, sync).await
        }
        .await;
        tx.finish(result).await
    }

    async fn start_sync_run(
        &self,
        account_id: &str,
        region: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<i64> {
        sqlx::query_scalar(
            "INSERT INTO sync_runs (account_id, region, started_at, status) \
             VALUES ($1, $2, $3, 'running') RETURNING id",
        )
        .bind(account_id)
        .bind(region)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)
    }

    async fn finish_sync_run(&self, id: i64, finish: &SyncRunFinish) -> StoreResult<()> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let row = sqlx::query(
                "UPDATE sync_runs SET finished_at = $2, status = $3, keys_seen = $4, \
                 keys_changed = $5, policy_versions_added = $6, findings_opened = $7, \
                 findings_resolved = $8, keys_deleted = $9, error = $10, iam_error = $11 \
             WHERE id = $1 RETURNING account_id, region, started_at",
            )
            .bind(id)
            .bind(finish.finished_at)
            .bind(run_status(finish.error.as_deref()))
            .bind(to_i64(finish.keys_seen))
            .bind(to_i64(finish.outcome.keys_changed))
            .bind(to_i64(finish.outcome.policy_versions_added))
            .bind(to_i64(finish.outcome.findings_opened))
            .bind(to_i64(finish.outcome.findings_resolved))
            .bind(to_i64(finish.outcome.keys_deleted))
            .bind(&finish.error)
            .bind(&finish.iam_error)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("sync run {id}")))?;
            if let Some(error) = &finish.error {
                let account_id: String = get(&row, "account_id")?;
                let region: String = get(&row, "region")?;
                let payload = sync_failed_payload(
                    id,
                    &account_id,
                    &region,
                    get(&row, "started_at")?,
                    finish.finished_at,
                    error,
                )?;
                insert_outbox(&mut tx, events::SYNC_FAILED, &payload, finish.finished_at).await?;
            }
            Ok(())
        }
        .await;
        tx.finish(result).await
    }

    async fn abandon_sync_runs(
        &self,
        account_id: &str,
        region: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let closed = sqlx::query(
                "UPDATE sync_runs SET finished_at = $3, status = 'failed', error = $4 \
                 WHERE account_id = $1 AND region = $2 AND status = 'running' \
                 RETURNING id, started_at",
            )
            .bind(account_id)
            .bind(region)
            .bind(now)
            .bind(reason)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            for row in &closed {
                let payload = sync_failed_payload(
                    get(row, "id")?,
                    account_id,
                    region,
                    get(row, "started_at")?,
                    now,
                    reason,
                )?;
                insert_outbox(&mut tx, events::SYNC_FAILED, &payload, now).await?;
            }
            Ok(u64::try_from(closed.len()).unwrap_or(u64::MAX))
        }
        .await;
        tx.finish(result).await
    }

    async fn recent_sync_runs(&self, limit: u32) -> StoreResult<Vec<SyncRunRow>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(run_row)
        .collect()
    }

    async fn sync_runs_page(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<SyncRunRow>, u64)> {
        let runs = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(run_row)
        .collect::<StoreResult<Vec<_>>>()?;
        // Runs are only ever appended, so a total read a moment later can only be larger.
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok((runs, count("total", total)?))
    }

    async fn latest_sync_runs(&self) -> StoreResult<Vec<SyncRunRow>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE id IN \
                 (SELECT MAX(id) FROM sync_runs GROUP BY account_id, region) \
             ORDER BY account_id, region"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(run_row)
        .collect()
    }

    async fn claim_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> StoreResult<super::RegionClaim> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            // A concurrent inserter of the same row makes this wait for its commit; afterwards
            // the row exists for everyone.
            sqlx::query(
                "INSERT INTO sync_leases (account_id, region) VALUES ($1, $2) \
                 ON CONFLICT (account_id, region) DO NOTHING",
            )
            .bind(account_id)
            .bind(region)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            // A row another replica is claiming right now is skipped, not waited for: it loses.
            let claimable: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM sync_leases WHERE account_id = $1 AND region = $2 \
                 AND (owner IS NULL OR lease_until IS NULL OR lease_until <= $3) \
                 AND (last_finished_at IS NULL OR last_finished_at < $4) \
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(account_id)
            .bind(region)
            .bind(now)
            .bind(due_before)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if claimable.is_none() {
                // Read without locking: a row a concurrent claimer holds still answers.
                let row = sqlx::query(
                    "SELECT owner, lease_until, last_finished_at FROM sync_leases \
                     WHERE account_id = $1 AND region = $2",
                )
                .bind(account_id)
                .bind(region)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                return Ok(super::RegionClaim::refused(
                    get(&row, "owner")?,
                    get(&row, "lease_until")?,
                    get(&row, "last_finished_at")?,
                    now,
                    due_before,
                ));
            }
            sqlx::query(
                "UPDATE sync_leases SET owner = $3, lease_until = $4 \
                 WHERE account_id = $1 AND region = $2",
            )
            .bind(account_id)
            .bind(region)
            .bind(owner)
            .bind(lease_until)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(super::RegionClaim::Claimed)
        }
        .await;
        tx.finish(result).await
    }

    async fn release_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        finished_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sync_leases SET owner = NULL, lease_until = NULL, \
                 last_finished_at = COALESCE($4, last_finished_at) \
             WHERE account_id = $1 AND region = $2 AND owner = $3",
        )
        .bind(account_id)
        .bind(region)
        .bind(owner)
        .bind(finished_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn renew_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let renewed = sqlx::query(
            "UPDATE sync_leases SET lease_until = $4 \
             WHERE account_id = $1 AND region = $2 AND owner = $3",
        )
        .bind(account_id)
        .bind(region)
        .bind(owner)
        .bind(lease_until)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn list_keys(&self, include_deleted: bool) -> StoreResult<Vec<KeyRow>> {
        sqlx::query(&format!(
            "SELECT {} FROM keys k WHERE $1 OR k.deleted_at IS NULL \
             ORDER BY k.deleted_at IS NOT NULL, k.arn",
            key_columns("$2")
        ))
        .bind(include_deleted)
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(key_row)
        .collect()
    }

    async fn list_findings(&self, include_resolved: bool) -> StoreResult<Vec<FindingRow>> {
        sqlx::query(&format!(
            "SELECT {FINDING_COLUMNS} FROM {} \
             WHERE $1 OR f.status = 'open' \
             ORDER BY f.key_arn, f.rule_id, f.locator",
            findings_from("$2")
        ))
        .bind(include_resolved)
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(finding_row)
        .collect()
    }

    async fn policy_versions(&self, key_arn: &str) -> StoreResult<Vec<PolicyVersionRow>> {
        sqlx::query(
            "SELECT id, key_arn, sha256, text, first_seen, last_seen FROM policy_versions \
             WHERE key_arn = $1 ORDER BY id",
        )
        .bind(key_arn)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|row| {
            Ok(PolicyVersionRow {
                id: get(row, "id")?,
                key_arn: get(row, "key_arn")?,
                sha256: get(row, "sha256")?,
                text: get(row, "text")?,
                first_seen: get(row, "first_seen")?,
                last_seen: get(row, "last_seen")?,
            })
        })
        .collect()
    }

    async fn query_keys(
        &self,
        filter: &KeyFilter,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<KeyRow>, u64)> {
        // k.arn is COLLATE "C": byte order, the same pages as on SQLite.
        // key_conditions binds "now" first: $1.
        let query = PagedQuery::new(
            &format!("SELECT {} FROM keys k", key_columns("$1")),
            "keys k",
            key_conditions(filter, Dialect::Postgres, self.clock.now()),
            after.map(|arn| ("k.arn", Arg::Text(arn.to_string()))),
            "k.arn",
            limit,
        );
        page_and_total(&self.pool, &query, key_row).await
    }

    async fn find_keys(&self, id_or_arn: &str) -> StoreResult<Vec<KeyRow>> {
        sqlx::query(&format!(
            "SELECT {} FROM keys k WHERE k.arn = $1 OR k.key_id = $1 \
             ORDER BY k.deleted_at IS NOT NULL, k.arn",
            key_columns("$2")
        ))
        .bind(id_or_arn)
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(key_row)
        .collect()
    }

    async fn query_findings(
        &self,
        filter: &FindingFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<FindingRow>, u64)> {
        // finding_conditions binds "now" first: $1.
        let from = findings_from("$1");
        let query = PagedQuery::new(
            &format!("SELECT {FINDING_COLUMNS} FROM {from}"),
            &from,
            finding_conditions(filter, Dialect::Postgres, self.clock.now()),
            after.map(|id| ("f.id", Arg::Int(id))),
            "f.id",
            limit,
        );
        page_and_total(&self.pool, &query, finding_row).await
    }

    async fn get_finding(&self, id: i64) -> StoreResult<Option<FindingRow>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        finding_at(&mut conn, id, self.clock.now()).await
    }

    async fn create_token(&self, token: &NewToken) -> StoreResult<TokenRow> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, sha256, role, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(&token.name)
        .bind(&token.sha256)
        .bind(&token.role)
        .bind(token.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        token_row(&row)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRow>> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(token_row)
        .collect()
    }

    async fn revoke_token(&self, name: &str, now: DateTime<Utc>) -> StoreResult<TokenRow> {
        let row = sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1 \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        match row {
            Some(row) => token_row(&row),
            None => Err(StoreError::NotFound(format!("token {name:?}"))),
        }
    }

    async fn authenticate(
        &self,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TokenRow>> {
        let select = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE sha256 = $1 AND revoked_at IS NULL"
        );
        // A read first: most requests find a recent stamp and write nothing.
        let token = sqlx::query(&select)
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(token_row)
            .transpose()?;
        match token {
            Some(token) if stamp_due(token.last_used_at, now) => {}
            other => return Ok(other),
        }
        // The stamp is conditional again: another request may have stamped it, or an admin
        // revoked it, since the read.
        let stamped = sqlx::query(&format!(
            "UPDATE api_tokens SET last_used_at = $2 WHERE sha256 = $1 \
             AND revoked_at IS NULL AND (last_used_at IS NULL OR last_used_at < $3) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(sha256)
        .bind(now)
        .bind(now - TOKEN_USE_INTERVAL)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let row = match stamped {
            Some(row) => Some(row),
            None => sqlx::query(&select)
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?,
        };
        row.as_ref().map(token_row).transpose()
    }

    async fn append_audit(&self, event: &NewAuditEvent) -> StoreResult<AuditEvent> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = append_audit_in(&mut tx, event).await;
        tx.finish(result).await
    }

    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<AuditEvent>, u64)> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, READ_SNAPSHOT).await?;
        let result = async {
            let events = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(audit_row)
            .collect::<StoreResult<Vec<_>>>()?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok((events, count("total", total)?))
        }
        .await;
        tx.finish(result).await
    }

    async fn verify_audit(&self) -> StoreResult<AuditVerification> {
        // Batches by id, each its own read: a long log never sits in memory, and no snapshot
        // stays open for the whole walk.
        let mut check = ChainCheck::new();
        let mut after = 0_i64;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after)
            .bind(i64::from(AUDIT_BATCH))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            for row in &rows {
                let id: i64 = get(row, "id")?;
                check.check(id, audit_row(row));
                after = id;
            }
            if rows.len() < usize::from(AUDIT_BATCH) {
                return Ok(check.finish());
            }
        }
    }
    async fn waive_finding(
        &self,
        finding_id: i64,
        waiver: &NewWaiver,
        audit: &NewAuditEvent,
    ) -> StoreResult<WaiverRow> {
        let now = waiver.created_at;
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let finding = finding_at(&mut tx, finding_id, now)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("finding {finding_id}")))?;
            if finding.status == "resolved" {
                return Err(StoreError::Conflict(format!(
                    "finding {finding_id} is resolved; only open findings can be waived"
                )));
            }
            let key_arn = match waiver.scope {
                WaiverScope::Key => Some(finding.key_arn.as_str()),
                WaiverScope::Account => None,
            };
            // A new waiver of the same scope replaces the active one: re-waiving renews.
            sqlx::query(
                "UPDATE waivers SET revoked_at = $1, revoked_by = $2 \
                 WHERE revoked_at IS NULL AND expires_at > $1 AND account_id = $3 \
                 AND rule_id = $4 AND key_arn IS NOT DISTINCT FROM $5",
            )
            .bind(now)
            .bind(&waiver.author)
            .bind(&finding.account_id)
            .bind(&finding.rule_id)
            .bind(key_arn)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let row = sqlx::query(&format!(
                "INSERT INTO waivers (key_arn, account_id, rule_id, reason, author, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {WAIVER_COLUMNS}"
            ))
            .bind(key_arn)
            .bind(&finding.account_id)
            .bind(&finding.rule_id)
            .bind(&waiver.reason)
            .bind(&waiver.author)
            .bind(now)
            .bind(waiver.expires_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            let created = waiver_row(&row)?;
            let after = finding_at(&mut tx, finding_id, now)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("finding {finding_id}")))?;
            let payload = FindingEvent::from(&after)
                .waived_payload("waived", std::slice::from_ref(&created))?;
            insert_outbox(&mut tx, events::FINDING_WAIVED, &payload, now).await?;
            append_audit_in(&mut tx, audit).await?;
            Ok(created)
        }
        .await;
        tx.finish(result).await
    }

    async fn revoke_waivers(
        &self,
        finding_id: i64,
        now: DateTime<Utc>,
        actor: &str,
        audit: &NewAuditEvent,
    ) -> StoreResult<Vec<WaiverRow>> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let finding = finding_at(&mut tx, finding_id, now)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("finding {finding_id}")))?;
            let revoked = sqlx::query(&format!(
                "UPDATE waivers SET revoked_at = $1, revoked_by = $2 \
                 WHERE revoked_at IS NULL AND expires_at > $1 AND account_id = $3 \
                 AND rule_id = $4 AND (key_arn IS NULL OR key_arn = $5) \
                 RETURNING {WAIVER_COLUMNS}"
            ))
            .bind(now)
            .bind(actor)
            .bind(&finding.account_id)
            .bind(&finding.rule_id)
            .bind(&finding.key_arn)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(waiver_row)
            .collect::<StoreResult<Vec<_>>>()?;
            if revoked.is_empty() {
                return Err(StoreError::NotFound(format!(
                    "an active waiver of finding {finding_id}"
                )));
            }
            let after = finding_at(&mut tx, finding_id, now)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("finding {finding_id}")))?;
            let payload = FindingEvent::from(&after).waived_payload("unwaived", &revoked)?;
            insert_outbox(&mut tx, events::FINDING_WAIVED, &payload, now).await?;
            append_audit_in(&mut tx, audit).await?;
            Ok(revoked)
        }
        .await;
        tx.finish(result).await
    }

    async fn finding_waivers(&self, finding_id: i64) -> StoreResult<Vec<WaiverRow>> {
        sqlx::query(&format!(
            "SELECT {} FROM waivers w JOIN findings f ON f.id = $1 \
             JOIN keys k ON k.arn = f.key_arn \
             WHERE w.account_id = k.account_id AND w.rule_id = f.rule_id \
             AND (w.key_arn IS NULL OR w.key_arn = f.key_arn) ORDER BY w.id DESC",
            WAIVER_COLUMNS
                .split(", ")
                .map(|c| format!("w.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(finding_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(waiver_row)
        .collect()
    }

    async fn set_finding_ticket(
        &self,
        finding_id: i64,
        ticket: Option<&str>,
        audit: &NewAuditEvent,
    ) -> StoreResult<FindingRow> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let done = sqlx::query("UPDATE findings SET ticket = $2 WHERE id = $1")
                .bind(finding_id)
                .bind(ticket)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("finding {finding_id}")));
            }
            append_audit_in(&mut tx, audit).await?;
            finding_at(&mut tx, finding_id, self.clock.now())
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("finding {finding_id}")))
        }
        .await;
        tx.finish(result).await
    }

    async fn set_remediation_ticket(
        &self,
        id: i64,
        ticket: Option<&str>,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let done = sqlx::query("UPDATE remediations SET ticket = $2 WHERE id = $1")
                .bind(id)
                .bind(ticket)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("remediation {id}")));
            }
            append_audit_in(&mut tx, audit).await?;
            existing_remediation(&mut tx, id).await
        }
        .await;
        tx.finish(result).await
    }

    async fn outbox_events(&self, after: Option<i64>, limit: u32) -> StoreResult<Vec<OutboxEvent>> {
        sqlx::query(
            "SELECT id, event, payload, created_at, dispatched_at FROM outbox \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|row| {
            Ok(OutboxEvent {
                id: get(row, "id")?,
                event: get(row, "event")?,
                payload: get(row, "payload")?,
                created_at: get(row, "created_at")?,
                dispatched_at: get(row, "dispatched_at")?,
            })
        })
        .collect()
    }

    async fn dispatch_outbox(
        &self,
        webhooks: &[WebhookSubscription],
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            // Rows another replica is dispatching right now are skipped, not waited for.
            let pending: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, event FROM outbox WHERE dispatched_at IS NULL ORDER BY id LIMIT $1 \
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            for (outbox_id, event) in &pending {
                for webhook in subscribed(webhooks, event) {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, outbox_id, webhook, event, status, \
                             attempts, created_at, next_attempt_at) \
                         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) \
                         ON CONFLICT (outbox_id, webhook) DO NOTHING",
                    )
                    .bind(new_delivery_id())
                    .bind(outbox_id)
                    .bind(&webhook.url)
                    .bind(event)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
            }
            let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
            sqlx::query("UPDATE outbox SET dispatched_at = $1 WHERE id = ANY($2)")
                .bind(now)
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
        }
        .await;
        tx.finish(result).await
    }

    async fn claim_deliveries(
        &self,
        webhooks: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        // Rows another replica is claiming right now are skipped, not waited for; a row is
        // locked from the SELECT to the commit, so each is claimed once.
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let claimed = sqlx::query(&format!(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_owner = $1, \
                     lease_until = $2 \
                 WHERE seq IN (SELECT seq FROM webhook_deliveries WHERE status = 'pending' \
                     AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
                     AND webhook = ANY($4) \
                     ORDER BY next_attempt_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED) \
                 RETURNING {DELIVERY_COLUMNS}"
            ))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(webhooks)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(delivery_row)
            .collect::<StoreResult<Vec<_>>>()?;
            let mut out = Vec::with_capacity(claimed.len());
            for delivery in claimed {
                let (payload, event_created_at): (String, DateTime<Utc>) =
                    sqlx::query_as("SELECT payload, created_at FROM outbox WHERE id = $1")
                        .bind(delivery.outbox_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                out.push(ClaimedDelivery {
                    delivery,
                    payload,
                    event_created_at,
                });
            }
            out.sort_by_key(|c| (c.delivery.next_attempt_at, c.delivery.seq));
            Ok(out)
        }
        .await;
        tx.finish(result).await
    }

    async fn complete_delivery(
        &self,
        id: &str,
        owner: &str,
        attempt: &DeliveryAttempt,
    ) -> StoreResult<bool> {
        let c = AttemptColumns::from(attempt);
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, \
                 next_attempt_at = COALESCE($4, next_attempt_at), last_status = $5, \
                 last_error = $6, delivered_at = $7, lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .bind(c.status)
        .bind(c.next_attempt_at)
        .bind(c.last_status)
        .bind(c.last_error)
        .bind(c.delivered_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)
        .map(|done| done.rows_affected() == 1)
    }

    async fn query_deliveries(
        &self,
        status: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<DeliveryRow>, u64)> {
        let mut filter = Conditions::default();
        if let Some(status) = status {
            let p = filter.arg(Arg::Text(status.to_string()));
            filter.push(format!("status = {p}"));
        }
        let query = PagedQuery::new(
            &format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"),
            "webhook_deliveries",
            filter,
            after.map(|seq| ("seq", Arg::Int(seq))),
            "seq",
            limit,
        );
        page_and_total(&self.pool, &query, delivery_row).await
    }
    async fn create_remediation(
        &self,
        r: &NewRemediation,
        audit: &NewAuditEvent,
    ) -> StoreResult<(RemediationRow, bool)> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            if let Some(key) = &r.idempotency_key {
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM remediations WHERE idempotency_key = $1")
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                if let Some(id) = id {
                    return Ok((existing_remediation(&mut tx, id).await?, false));
                }
            }
            // A concurrent proposal with the same idempotency key may commit between the check
            // above and this insert: ON CONFLICT waits for it and inserts nothing, and the retry
            // gets that proposal instead of a unique violation.
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO remediations (key_arn, account_id, region, state, requester, ticket, \
                     comment, base_policy, base_sha256, proposed_policy, proposed_sha256, diff, \
                     resolves, remaining, created_at, updated_at, expires_at, rollback_of, \
                     idempotency_key, impact) \
                 VALUES ($1, $2, $3, 'pending_approval', $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     $13, $14, $14, $15, $16, $17, $18) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            )
            .bind(&r.key_arn)
            .bind(&r.account_id)
            .bind(&r.region)
            .bind(&r.requester)
            .bind(&r.ticket)
            .bind(&r.comment)
            .bind(&r.base_policy)
            .bind(&r.base_sha256)
            .bind(&r.proposed_policy)
            .bind(&r.proposed_sha256)
            .bind(&r.diff)
            .bind(to_json(&r.resolves)?)
            .bind(to_json(&r.remaining)?)
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.rollback_of)
            .bind(&r.idempotency_key)
            .bind(&r.impact)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let Some(id) = id else {
                // Read committed: this statement sees the row the conflicting proposal committed.
                let existing: i64 =
                    sqlx::query_scalar("SELECT id FROM remediations WHERE idempotency_key = $1")
                        .bind(&r.idempotency_key)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                return Ok((existing_remediation(&mut tx, existing).await?, false));
            };
            let created = existing_remediation(&mut tx, id).await?;
            insert_outbox(
                &mut tx,
                events::REMEDIATION_REQUESTED,
                &remediation_payload(&created)?,
                r.created_at,
            )
            .await?;
            append_audit_in(&mut tx, audit).await?;
            Ok((created, true))
        }
        .await;
        tx.finish(result).await
    }

    async fn get_remediation(&self, id: i64) -> StoreResult<Option<RemediationRow>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        remediation_in(&mut conn, id).await
    }

    async fn remediation_by_idempotency_key(
        &self,
        key: &str,
    ) -> StoreResult<Option<RemediationRow>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM remediations WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?;
        match id {
            Some(id) => remediation_in(&mut conn, id).await,
            None => Ok(None),
        }
    }

    async fn list_remediations(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<RemediationRow>, u64)> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM remediations WHERE $1::BIGINT IS NULL OR id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            rows.push(existing_remediation(&mut conn, id).await?);
        }
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM remediations")
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok((rows, count("total", total)?))
    }

    async fn approve_remediation(
        &self,
        id: i64,
        approval: &ApprovalRow,
        required: u32,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow> {
        let now = approval.created_at;
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            // The row lock orders concurrent approvers: the second counts the first.
            let current = lock_remediation(&mut tx, id).await?;
            check_approval(&current, &approval.approver, now)?;
            sqlx::query(
                "INSERT INTO remediation_approvals (remediation_id, approver, comment, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(&approval.approver)
            .bind(&approval.comment)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let approvals = current.approvals.len() + 1;
            if approvals >= required.max(1) as usize {
                transition_in(
                    &mut tx,
                    id,
                    &[remediation_state::PENDING_APPROVAL],
                    None,
                    remediation_state::APPROVED,
                    None,
                    events::REMEDIATION_APPROVED,
                    now,
                    audit,
                )
                .await
            } else {
                // Not a transition (still pending): audited, no outbox event.
                sqlx::query("UPDATE remediations SET updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                append_audit_in(&mut tx, audit).await?;
                existing_remediation(&mut tx, id).await
            }
        }
        .await;
        tx.finish(result).await
    }

    async fn reject_remediation(
        &self,
        id: i64,
        rejection: &ApprovalRow,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let current = lock_remediation(&mut tx, id).await?;
            check_rejection(&current, rejection)?;
            transition_in(
                &mut tx,
                id,
                &[
                    remediation_state::PENDING_APPROVAL,
                    remediation_state::APPROVED,
                ],
                None,
                remediation_state::REJECTED,
                rejection.comment.as_deref(),
                events::REMEDIATION_REJECTED,
                rejection.created_at,
                audit,
            )
            .await
        }
        .await;
        tx.finish(result).await
    }

    async fn claim_remediation(
        &self,
        id: i64,
        claimant: &str,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> StoreResult<Option<RemediationRow>> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let claimed = sqlx::query(
                "UPDATE remediations SET state = 'applying', updated_at = $1, claimed_by = $3, \
                     claimed_at = $1 \
                 WHERE id = $2 AND state = 'approved' AND expires_at > $1",
            )
            .bind(now)
            .bind(id)
            .bind(claimant)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if claimed != 1 {
                return Ok(None);
            }
            let row = existing_remediation(&mut tx, id).await?;
            insert_outbox(
                &mut tx,
                events::REMEDIATION_APPLYING,
                &remediation_payload(&row)?,
                now,
            )
            .await?;
            append_audit_in(&mut tx, audit).await?;
            Ok(Some(row))
        }
        .await;
        tx.finish(result).await
    }

    async fn finish_remediation(
        &self,
        id: i64,
        claimant: &str,
        result: &ApplyResult,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow> {
        let applied = matches!(result, ApplyResult::Applied);
        let (state, event, error) = apply_result(result);
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let current = lock_remediation(&mut tx, id).await?;
            if current.state != remediation_state::APPLYING {
                return Err(StoreError::Conflict(format!(
                    "remediation {id} is {}, not applying",
                    current.state
                )));
            }
            if current.claimed_by.as_deref().unwrap_or("") != claimant {
                return Err(StoreError::Conflict(format!(
                    "remediation {id} is applying under claim {}, not {claimant}: the claim was lost",
                    current.claimed_by.as_deref().unwrap_or("(none)")
                )));
            }
            let finished = transition_in(
                &mut tx,
                id,
                &[remediation_state::APPLYING],
                Some(claimant),
                state,
                error,
                event,
                now,
                audit,
            )
            .await?;
            // An applied rollback undoes the remediation it rolls back, in the same transaction.
            if applied && let Some(original) = finished.rollback_of {
                let before = lock_remediation(&mut tx, original).await?;
                if before.state == remediation_state::APPLIED {
                    transition_in(
                        &mut tx,
                        original,
                        &[remediation_state::APPLIED],
                        None,
                        remediation_state::ROLLED_BACK,
                        None,
                        events::REMEDIATION_ROLLED_BACK,
                        now,
                        &rolled_back_audit(&before, id, &audit.actor, now)?,
                    )
                    .await?;
                }
            }
            Ok(finished)
        }
        .await;
        tx.finish(result).await
    }

    async fn abandoned_remediations(
        &self,
        claimed_before: DateTime<Utc>,
    ) -> StoreResult<Vec<RemediationRow>> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM remediations WHERE state = 'applying' \
             AND COALESCE(claimed_at, updated_at) <= $1 ORDER BY id",
        )
        .bind(claimed_before)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            rows.push(existing_remediation(&mut conn, id).await?);
        }
        Ok(rows)
    }

    async fn expire_remediations(&self, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        let mut tx = Tx::<Postgres>::begin(&self.pool, "BEGIN").await?;
        let result = async {
            let due: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM remediations WHERE state IN ('pending_approval', 'approved') \
                 AND expires_at <= $1 ORDER BY id FOR UPDATE",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            let mut expired = Vec::with_capacity(due.len());
            for id in due {
                let current = existing_remediation(&mut tx, id).await?;
                let audit = expiry_audit(&current, now)?;
                match transition_in(
                    &mut tx,
                    id,
                    &[
                        remediation_state::PENDING_APPROVAL,
                        remediation_state::APPROVED,
                    ],
                    None,
                    remediation_state::EXPIRED,
                    None,
                    events::REMEDIATION_EXPIRED,
                    now,
                    &audit,
                )
                .await
                {
                    Ok(_) => expired.push(id),
                    // Claimed or rejected in the meantime: not expired after all.
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(expired)
        }
        .await;
        tx.finish(result).await
    }
}
