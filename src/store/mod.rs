//! Persistence behind one narrow trait: the only module that talks to a database. SQLite is the
//! embedded default, Postgres serves teams and several replicas; both pass one contract suite.

mod common;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Everything that can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL {0:?} is neither sqlite:… nor postgres:…")]
    UnsupportedUrl(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// An account as configured, kept so reports can name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    pub regions: Vec<String>,
}

/// A grant on a key, as ListGrants returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GrantRecord {
    pub grant_id: String,
    pub name: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub issuing_account: Option<String>,
    pub operations: Vec<String>,
}

/// A key's metadata as the sync read it from AWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    pub arn: String,
    pub account_id: String,
    pub region: String,
    pub key_id: String,
    pub description: String,
    /// `CUSTOMER` or `AWS`.
    pub key_manager: String,
    pub key_state: String,
    pub key_spec: String,
    pub key_usage: String,
    pub origin: String,
    pub multi_region: bool,
    pub creation_date: Option<DateTime<Utc>>,
    pub deletion_date: Option<DateTime<Utc>>,
    /// `None` when rotation does not apply to the key or could not be read.
    pub rotation_enabled: Option<bool>,
    pub aliases: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub grants: Vec<GrantRecord>,
}

/// What the sync learnt about a key's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyState {
    /// The text exactly as GetKeyPolicy returned it, with its SHA-256 (hex).
    Readable { text: String, sha256: String },
    /// GetKeyPolicy was refused (e.g. AccessDenied): the reason, for KMS-UNREADABLE.
    Unreadable { reason: String },
}

/// A finding as the engine produced it for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFinding {
    pub rule_id: String,
    pub locator: String,
    pub severity: String,
    pub statement_index: Option<i64>,
    pub sid: Option<String>,
    pub message: String,
}

/// A key whose metadata, policy or evaluation changed: written whole, findings reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdate {
    pub key: KeyRecord,
    /// SHA-256 of the metadata that findings depend on, for change detection.
    pub fingerprint: String,
    pub policy: PolicyState,
    /// The rule-set version and evaluation context the findings were computed with.
    pub evaluation: String,
    /// The key's complete set of current findings.
    pub findings: Vec<NewFinding>,
    /// False for AWS-managed keys: reported, never remediated.
    pub remediable: bool,
}

/// What the store holds for a key, to decide whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFingerprint {
    pub arn: String,
    pub fingerprint: String,
    pub policy_sha256: Option<String>,
    pub policy_error: Option<String>,
    pub evaluation: String,
}

/// One account·region's results, applied in one transaction.
#[derive(Debug, Clone)]
pub struct RegionSync {
    pub account_id: String,
    pub region: String,
    pub now: DateTime<Utc>,
    /// Every key ARN in the listing; unchanged ones only get their last-seen stamp.
    pub listed: Vec<String>,
    /// True when the listing is known complete: only then are missing keys marked deleted.
    pub listing_complete: bool,
    pub updates: Vec<KeyUpdate>,
}

/// What applying a [`RegionSync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegionSyncOutcome {
    pub keys_changed: u64,
    pub policy_versions_added: u64,
    pub findings_opened: u64,
    pub findings_resolved: u64,
    pub keys_deleted: u64,
}

/// How a sync run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRunFinish {
    pub finished_at: DateTime<Utc>,
    pub keys_seen: u64,
    pub outcome: RegionSyncOutcome,
    /// `None` when the run succeeded.
    pub error: Option<String>,
}

/// A sync run of one account·region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRunRow {
    pub id: i64,
    pub account_id: String,
    pub region: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub keys_seen: u64,
    pub keys_changed: u64,
    pub policy_versions_added: u64,
    pub findings_opened: u64,
    pub findings_resolved: u64,
    pub keys_deleted: u64,
    pub error: Option<String>,
}

/// A stored key with its current policy and compliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    pub key: KeyRecord,
    pub policy_sha256: Option<String>,
    pub policy_error: Option<String>,
    pub remediable: bool,
    pub open_findings: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A stored finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingRow {
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    pub rule_id: String,
    pub locator: String,
    pub severity: String,
    /// `open` or `resolved`.
    pub status: String,
    pub statement_index: Option<i64>,
    pub sid: Option<String>,
    pub message: String,
    /// The policy version the finding was judged on.
    pub policy_sha256: Option<String>,
    pub first_seen: DateTime<Utc>,
    /// For an open finding of a present key: when the key was last seen unchanged.
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// One stored version of a key policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersionRow {
    pub id: i64,
    pub key_arn: String,
    pub sha256: String,
    pub text: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// Counts for metrics and the readiness check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub keys_compliant: u64,
    pub keys_noncompliant: u64,
    /// (rule id, severity, open findings)
    pub open_findings: Vec<(String, String, u64)>,
}

/// An API token as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub id: i64,
    /// Unique; shown in the audit log as the actor.
    pub name: String,
    /// `viewer`, `operator`, `approver` or `admin`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    /// Lower-case hex SHA-256 of the secret.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// One entry of the append-only audit log. `hash` = SHA-256 over `prev_hash` and the entry's own
/// content ([`audit_hash`]), so any edit or deletion breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who: a token name, `cli:<user>`, or `keyward` for the service itself.
    pub actor: String,
    /// What, e.g. `sync.triggered`, `token.created`.
    pub action: String,
    /// On what, e.g. a key ARN or a token name.
    pub target: String,
    /// Canonical JSON text with the details.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// Canonical JSON text (serde_json::to_string of a value).
    pub detail: String,
}

/// The result of checking the audit hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    pub events: u64,
    /// The first entry whose hash or link does not match, when the chain is broken.
    pub first_broken_id: Option<i64>,
    pub reason: Option<String>,
}

/// The hash of an audit entry: SHA-256 (hex) of the previous hash and the entry's fields, each
/// length-prefixed so no two different entries serialise alike. Timestamps use RFC 3339 with
/// microseconds and `Z`.
pub fn audit_hash(
    prev_hash: &str,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for part in [prev_hash, at.as_str(), actor, action, target, detail] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Filters of the key list; every field narrows, `None` does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub account: Option<String>,
    pub region: Option<String>,
    /// Keys with an open finding of this rule.
    pub rule: Option<String>,
    /// Keys with an open finding of this severity.
    pub severity: Option<String>,
    /// `compliant` = no open finding.
    pub compliant: Option<bool>,
    /// Case-insensitive substring of the ARN, key id, description, an alias, or a tag key/value.
    pub q: Option<String>,
    pub include_deleted: bool,
}

/// Filters of the finding list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    pub account: Option<String>,
    pub region: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    /// `open`, `resolved` or `waived`; `None` = every status.
    pub status: Option<String>,
    pub key_arn: Option<String>,
    /// Case-insensitive substring of the key ARN, key id, an alias, or the message.
    pub q: Option<String>,
}

/// The storage contract; SQLite and Postgres implement it identically.
#[async_trait]
pub trait Store: Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Records the configured accounts (insert or update by id).
    async fn upsert_accounts(&self, accounts: &[AccountRow]) -> StoreResult<()>;
    async fn list_accounts(&self) -> StoreResult<Vec<AccountRow>>;

    /// Change-detection state of the live keys of one account·region.
    async fn key_fingerprints(
        &self,
        account_id: &str,
        region: &str,
    ) -> StoreResult<Vec<KeyFingerprint>>;
    /// Applies one account·region's sync results atomically: changed keys are written with new
    /// policy versions (only when the hash changed) and reconciled findings; listed keys get
    /// their last-seen stamp; with a complete listing, keys not listed are marked deleted and
    /// their open findings resolved.
    async fn apply_region_sync(&self, sync: &RegionSync) -> StoreResult<RegionSyncOutcome>;

    /// Opens a sync run row (status `running`).
    async fn start_sync_run(
        &self,
        account_id: &str,
        region: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// Closes a sync run row as `succeeded` or `failed`.
    async fn finish_sync_run(&self, id: i64, finish: &SyncRunFinish) -> StoreResult<()>;
    /// Marks runs of an account·region still `running` as failed with `reason`: called by the
    /// holder of the region's claim, so such runs belong to a pass that died or was abandoned.
    /// Returns how many were closed.
    async fn abandon_sync_runs(
        &self,
        account_id: &str,
        region: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64>;
    /// The newest runs first.
    async fn recent_sync_runs(&self, limit: u32) -> StoreResult<Vec<SyncRunRow>>;
    /// The newest run of every account·region.
    async fn latest_sync_runs(&self) -> StoreResult<Vec<SyncRunRow>>;

    /// Claims an account·region for a sync pass: succeeds when nobody holds an unexpired lease
    /// and its last pass finished before `due_before`. Exactly one caller wins, across replicas.
    async fn claim_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Releases a claim; `finished_at` is recorded when the pass completed.
    async fn release_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        finished_at: Option<DateTime<Utc>>,
    ) -> StoreResult<()>;

    /// Keys, live ones first then deleted, each ordered by ARN.
    async fn list_keys(&self, include_deleted: bool) -> StoreResult<Vec<KeyRow>>;
    /// Findings ordered by key ARN, rule id, locator; open only unless `include_resolved`.
    async fn list_findings(&self, include_resolved: bool) -> StoreResult<Vec<FindingRow>>;
    /// Every stored policy version of a key, oldest first.
    async fn policy_versions(&self, key_arn: &str) -> StoreResult<Vec<PolicyVersionRow>>;
    /// Counts for metrics.
    async fn stats(&self) -> StoreResult<StoreStats>;

    /// Live keys (and deleted ones when asked) matching `filter`, ordered by ARN, strictly after
    /// `after` (an ARN), at most `limit`; with the total count of matches (ignoring paging).
    async fn query_keys(
        &self,
        filter: &KeyFilter,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<KeyRow>, u64)>;
    /// Keys whose ARN or key id is `id_or_arn` (a multi-Region key id names one key per Region).
    async fn find_keys(&self, id_or_arn: &str) -> StoreResult<Vec<KeyRow>>;
    /// Findings matching `filter`, ordered by id, strictly after `after`, at most `limit`; with
    /// the total count of matches.
    async fn query_findings(
        &self,
        filter: &FindingFilter,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<FindingRow>, u64)>;
    async fn get_finding(&self, id: i64) -> StoreResult<Option<FindingRow>>;

    /// Creates a token; a name already used is a `Conflict`.
    async fn create_token(&self, token: &NewToken) -> StoreResult<TokenRow>;
    /// Every token, revoked ones included, by id.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRow>>;
    /// Revokes the token with this name; `NotFound` if there is none, idempotent otherwise.
    async fn revoke_token(&self, name: &str, now: DateTime<Utc>) -> StoreResult<TokenRow>;
    /// The unrevoked token with this secret hash; records its use (at most once a minute, so
    /// reads do not become writes on every request).
    async fn authenticate(&self, sha256: &str, now: DateTime<Utc>)
    -> StoreResult<Option<TokenRow>>;

    /// Appends to the audit log, chaining the hash to the previous entry atomically (entries
    /// appended concurrently, also from several replicas, still form one chain).
    async fn append_audit(&self, event: &NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Audit entries newest first, strictly before `before` (an id), at most `limit`; with the total.
    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<AuditEvent>, u64)>;
    /// Recomputes the whole chain.
    async fn verify_audit(&self) -> StoreResult<AuditVerification>;
}

/// Opens (creating if missing) the database a URL names and applies migrations.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(PostgresStore::connect(url).await?)
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    };
    store.migrate().await?;
    Ok(store)
}
