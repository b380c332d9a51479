//! Persistence behind one narrow trait: the only module that talks to a database. SQLite is the
//! embedded default, Postgres serves teams and several replicas; both pass one contract suite.

mod common;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};

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
    /// The rest of DescribeKey's answer.
    pub metadata: KeyMetadataExtra,
}

/// The DescribeKey fields without a column of their own (migration 0008), stored as one JSON
/// document: none of them is filtered or sorted on, and a JSON column takes fields AWS adds
/// later without another migration. `CustomerMasterKeySpec` is left out: it is the deprecated
/// twin of `key_spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct KeyMetadataExtra {
    /// `Enabled`; `None` when DescribeKey could not be read.
    pub enabled: Option<bool>,
    pub encryption_algorithms: Vec<String>,
    pub signing_algorithms: Vec<String>,
    pub mac_algorithms: Vec<String>,
    pub key_agreement_algorithms: Vec<String>,
    /// When imported key material expires (`ValidTo`).
    pub valid_to: Option<DateTime<Utc>>,
    /// `KEY_MATERIAL_EXPIRES` or `KEY_MATERIAL_DOES_NOT_EXPIRE`, for imported material.
    pub expiration_model: Option<String>,
    pub pending_deletion_window_in_days: Option<i32>,
    pub custom_key_store_id: Option<String>,
    pub cloud_hsm_cluster_id: Option<String>,
    pub multi_region_configuration: Option<MultiRegionConfig>,
    /// The external key's id in an external key store (`XksKeyConfiguration.Id`).
    pub xks_key_id: Option<String>,
    pub current_key_material_id: Option<String>,
    /// Operations KMS refused at the last sync (e.g. `ListGrants`): the values they give are
    /// the ones stored before the refusal.
    pub unread_operations: Vec<String>,
}

/// `MultiRegionConfiguration` of a multi-Region key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MultiRegionConfig {
    /// `PRIMARY` or `REPLICA`.
    pub key_type: Option<String>,
    pub primary_key: Option<MultiRegionKeyRef>,
    pub replica_keys: Vec<MultiRegionKeyRef>,
}

/// One key of a multi-Region key family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MultiRegionKeyRef {
    pub arn: Option<String>,
    pub region: Option<String>,
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
    /// Listed keys that could not be read this pass: kept present and stamped as seen, but their
    /// policy version is not stamped as fetched.
    pub unread: Vec<String>,
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

/// What [`Store::claim_region`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum RegionClaim {
    /// The caller now holds the region's lease.
    Claimed,
    /// An unexpired lease is held by `owner` (the caller itself included: a holder cannot claim
    /// again, it renews); `None` when another replica is claiming it at this very moment.
    Held { owner: Option<String> },
    /// Its last pass finished at `last_finished_at`, not before the due time.
    NotDue { last_finished_at: DateTime<Utc> },
}

impl RegionClaim {
    /// True when the caller won the claim.
    pub fn is_claimed(&self) -> bool {
        matches!(self, RegionClaim::Claimed)
    }

    /// Why a claim failed, from the lease row as it is now: held beats not due.
    pub fn refused(
        owner: Option<String>,
        lease_until: Option<DateTime<Utc>>,
        last_finished_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> Self {
        match (owner, lease_until, last_finished_at) {
            (Some(owner), Some(until), _) if until > now => {
                RegionClaim::Held { owner: Some(owner) }
            }
            (_, _, Some(finished)) if finished >= due_before => RegionClaim::NotDue {
                last_finished_at: finished,
            },
            // Free by the row, yet not won: a concurrent claimer holds its row lock.
            _ => RegionClaim::Held { owner: None },
        }
    }
}

/// How a sync run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRunFinish {
    pub finished_at: DateTime<Utc>,
    pub keys_seen: u64,
    pub outcome: RegionSyncOutcome,
    /// `None` when the run succeeded.
    pub error: Option<String>,
    /// Why the account's IAM inventory could not be read in this pass (the previous one stays).
    pub iam_error: Option<String>,
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
    /// Why the account's IAM inventory could not be read in this pass.
    pub iam_error: Option<String>,
}

/// A stored key with its current policy and compliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    pub key: KeyRecord,
    pub policy_sha256: Option<String>,
    pub policy_error: Option<String>,
    pub remediable: bool,
    /// Open findings not covered by an active waiver.
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
    /// `open`, `resolved`, or `waived`: open, but covered at read time by an unrevoked,
    /// unexpired waiver (see [`WaiverRow`]).
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
    /// The covering waiver of a `waived` finding (the one expiring last).
    pub waiver_id: Option<i64>,
    pub waiver_reason: Option<String>,
    pub waiver_expires_at: Option<DateTime<Utc>>,
    /// A ticketing system's reference, e.g. `JIRA-123`.
    pub ticket: Option<String>,
}

/// What a waiver covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaiverScope {
    /// The finding's rule on the finding's key.
    Key,
    /// The finding's rule on every key of the finding's account, present and future.
    Account,
}

impl WaiverScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Account => "account",
        }
    }
}

/// Accepted risk: while unrevoked and before `expires_at`, open findings of `rule_id` on
/// `key_arn` (or, with no key, on every key of `account_id`) read as `waived`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaiverRow {
    pub id: i64,
    /// `None`: the waiver covers every key of the account.
    pub key_arn: Option<String>,
    pub account_id: String,
    pub rule_id: String,
    pub reason: String,
    /// The token name that waived.
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

impl WaiverRow {
    pub fn scope(&self) -> WaiverScope {
        if self.key_arn.is_some() {
            WaiverScope::Key
        } else {
            WaiverScope::Account
        }
    }
}

/// A waiver to create for a finding; the key, account and rule come from the finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWaiver {
    pub scope: WaiverScope,
    pub reason: String,
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// States of a remediation (see DESIGN.md "Remediation state machine").
pub mod remediation_state {
    pub const PENDING_APPROVAL: &str = "pending_approval";
    pub const APPROVED: &str = "approved";
    pub const APPLYING: &str = "applying";
    pub const APPLIED: &str = "applied";
    pub const REJECTED: &str = "rejected";
    pub const STALE: &str = "stale";
    pub const FAILED: &str = "failed";
    pub const EXPIRED: &str = "expired";
    /// An applied remediation whose rollback (a remediation with `rollback_of` naming it) was
    /// applied.
    pub const ROLLED_BACK: &str = "rolled_back";
}

/// A remediation to store: a proposed policy for one key, as the service computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRemediation {
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    /// The token name that proposed.
    pub requester: String,
    pub ticket: Option<String>,
    pub comment: Option<String>,
    pub base_policy: String,
    pub base_sha256: String,
    pub proposed_policy: String,
    pub proposed_sha256: String,
    /// JSON text: the statement diff.
    pub diff: String,
    /// Rule ids the proposal resolves.
    pub resolves: Vec<String>,
    /// Rule ids it leaves open.
    pub remaining: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The remediation this one rolls back.
    pub rollback_of: Option<i64>,
    /// JSON text: who loses, keeps and gains access (`access::AccessImpact`); `None` when the
    /// account's IAM inventory was not known.
    pub impact: Option<String>,
    /// A second create with the same key returns the first remediation.
    pub idempotency_key: Option<String>,
}

/// One approval of a remediation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApprovalRow {
    pub approver: String,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A stored remediation with its approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RemediationRow {
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    /// `pending_approval`, `approved`, `applying`, `applied`, `rolled_back`, `rejected`,
    /// `stale`, `failed` or `expired`.
    pub state: String,
    pub requester: String,
    pub ticket: Option<String>,
    pub comment: Option<String>,
    pub base_policy: String,
    pub base_sha256: String,
    pub proposed_policy: String,
    pub proposed_sha256: String,
    /// The statement diff (JSON).
    #[schema(value_type = Object)]
    pub diff: serde_json::Value,
    pub resolves: Vec<String>,
    pub remaining: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub rollback_of: Option<i64>,
    /// Who loses, keeps and gains access (`access::AccessImpact`), when it was computed.
    #[schema(value_type = Option<Object>)]
    pub impact: Option<serde_json::Value>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// The last claim to apply it: the instance id and a nonce naming that one claim. Only that
    /// claim may finish the apply.
    pub claimed_by: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    /// Distinct approvers, in approval order.
    pub approvals: Vec<ApprovalRow>,
}

/// How an apply that was claimed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyResult {
    /// The key's policy now equals the proposal.
    Applied,
    /// The key's policy no longer equals the base: nothing was written.
    Stale(String),
    /// PutKeyPolicy or the verification failed.
    Failed(String),
    /// Crash recovery found the key policy still equal to the base: nothing was written, so
    /// the remediation goes back to `approved` (the reason is audited, not stored as an error).
    Unapplied(String),
}

/// Event names of the outbox; webhooks subscribe to them. A public contract.
pub mod events {
    pub const FINDING_OPENED: &str = "finding.opened";
    pub const FINDING_RESOLVED: &str = "finding.resolved";
    pub const FINDING_WAIVED: &str = "finding.waived";
    pub const REMEDIATION_REQUESTED: &str = "remediation.requested";
    pub const REMEDIATION_APPROVED: &str = "remediation.approved";
    pub const REMEDIATION_APPLIED: &str = "remediation.applied";
    pub const REMEDIATION_FAILED: &str = "remediation.failed";
    /// Claimed for applying (`approved → applying`).
    pub const REMEDIATION_APPLYING: &str = "remediation.applying";
    pub const REMEDIATION_REJECTED: &str = "remediation.rejected";
    /// The key policy changed since the proposal: nothing was written.
    pub const REMEDIATION_STALE: &str = "remediation.stale";
    pub const REMEDIATION_EXPIRED: &str = "remediation.expired";
    /// An applied remediation was undone by its applied rollback.
    pub const REMEDIATION_ROLLED_BACK: &str = "remediation.rolled_back";
    /// An apply found not to have written anything (its process died or gave up before
    /// PutKeyPolicy) went back to `approved`. Distinct from `remediation.approved` so a
    /// subscriber never counts a second approval.
    pub const REMEDIATION_UNAPPLIED: &str = "remediation.unapplied";
    pub const SYNC_FAILED: &str = "sync.failed";

    /// Every event a webhook may subscribe to.
    pub const ALL: [&str; 14] = [
        FINDING_OPENED,
        FINDING_RESOLVED,
        FINDING_WAIVED,
        REMEDIATION_REQUESTED,
        REMEDIATION_APPROVED,
        REMEDIATION_APPLIED,
        REMEDIATION_FAILED,
        REMEDIATION_APPLYING,
        REMEDIATION_REJECTED,
        REMEDIATION_STALE,
        REMEDIATION_EXPIRED,
        REMEDIATION_ROLLED_BACK,
        REMEDIATION_UNAPPLIED,
        SYNC_FAILED,
    ];
}

/// An event in the outbox, written in the same transaction as the change it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEvent {
    pub id: i64,
    pub event: String,
    /// JSON text: the `data` of the webhook body.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// When deliveries to the configured webhooks were created for it.
    pub dispatched_at: Option<DateTime<Utc>>,
}

/// A webhook as the fan-out sees it: where, and which events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    pub url: String,
    pub events: Vec<String>,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRow {
    /// Listing order.
    pub seq: i64,
    /// The idempotency id sent as `X-Keyward-Delivery`, the same on every attempt.
    pub id: String,
    pub outbox_id: i64,
    /// The webhook's URL.
    pub webhook: String,
    pub event: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery claimed for one attempt, with what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// `attempts` already counts this attempt.
    pub delivery: DeliveryRow,
    pub payload: String,
    pub event_created_at: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryAttempt {
    /// A 2xx answer.
    Delivered { at: DateTime<Utc>, status: u16 },
    /// Try again at `next_attempt_at`.
    Retry {
        next_attempt_at: DateTime<Utc>,
        status: Option<u16>,
        error: String,
    },
    /// Out of attempts: give up.
    Failed { status: Option<u16>, error: String },
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

/// A dashboard sign-in to store; only the SHA-256 of the cookie secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id_sha256: String,
    /// The token name or proxy user: the actor in audit events.
    pub actor: String,
    pub role: String,
    /// The token signed in with; revoking it ends the session.
    pub token_name: Option<String>,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A live dashboard session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub actor: String,
    pub role: String,
    pub token_name: Option<String>,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Compliance of the live keys of one account·region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionCompliance {
    pub account_id: String,
    pub region: String,
    pub keys: u64,
    /// Keys without an open (unwaived) finding.
    pub compliant_keys: u64,
    pub open_findings: u64,
    /// Keys with an open KMS-DELEGATION finding.
    pub delegating_keys: u64,
}

/// The compliance figures over every live key, computed together so that they agree: what
/// [`Store::stats`] and [`Store::compliance_by_region`] return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ComplianceFigures {
    pub stats: StoreStats,
    /// Ordered by account and region.
    pub regions: Vec<RegionCompliance>,
}

/// [`RegionCompliance`] as recorded for one day, for the trend chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySnapshot {
    pub day: NaiveDate,
    pub account_id: String,
    pub region: String,
    pub keys: u64,
    pub compliant_keys: u64,
    pub open_findings: u64,
    pub delegating_keys: u64,
}

/// What changes whenever compliance can change: a sync run starts or ends, a waiver is created
/// or revoked, or the next active waiver expires. Equal markers (before `next_waiver_expiry`)
/// mean equal compliance figures, so aggregates can be cached across replicas safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMarker {
    pub last_sync_run: i64,
    pub running_sync_runs: u64,
    pub last_waiver: i64,
    pub revoked_waivers: u64,
    /// The earliest expiry of an active waiver after "now"; figures change then by themselves.
    pub next_waiver_expiry: Option<DateTime<Utc>>,
}

/// Orders of the dashboard's key list; ties are broken by ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySort {
    #[default]
    Arn,
    Account,
    Region,
    /// The first alias (keys without one last).
    Alias,
    State,
    /// Open findings, fewest first.
    Compliance,
}

/// The stored IAM inventory of an account, and the last failure to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamInventoryRow {
    pub account_id: String,
    /// SHA-256 of `inventory`; `None` when no read has succeeded yet.
    pub sha256: Option<String>,
    /// JSON text of `access::IamInventory`.
    pub inventory: Option<String>,
    pub fetched_at: Option<DateTime<Utc>>,
    pub changed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Filters of the key list; every field narrows, `None` does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub account: Option<String>,
    pub region: Option<String>,
    /// Keys with an open (unwaived) finding of this rule.
    pub rule: Option<String>,
    /// Keys with an open (unwaived) finding of this severity.
    pub severity: Option<String>,
    /// `compliant` = no open finding (waived findings are accepted risk: they do not count).
    pub compliant: Option<bool>,
    /// Case-insensitive substring of the ARN, key id, description, an alias, or a tag key/value.
    pub q: Option<String>,
    pub include_deleted: bool,
    /// Only keys marked deleted (implies `include_deleted`).
    pub deleted_only: bool,
}

/// Filters of the finding list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    pub account: Option<String>,
    pub region: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    /// `open`, `resolved`, `waived`, or `current` (open and waived); `None` = every status.
    pub status: Option<String>,
    pub key_arn: Option<String>,
    /// Case-insensitive substring of the key ARN, key id, description, an alias, a tag key or
    /// value, or the message.
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
    /// their last-seen stamp, and those read this pass (not in `unread`) a last-seen stamp on
    /// their current policy version; with a complete listing, keys not listed are marked
    /// deleted and their open findings resolved.
    async fn apply_region_sync(&self, sync: &RegionSync) -> StoreResult<RegionSyncOutcome>;
    /// [`Store::apply_region_sync`] fenced by the region's lease: inside the same transaction it
    /// checks that `owner` still holds the lease, and writes nothing (a `Conflict` saying "lease
    /// lost") when another replica has taken it over meanwhile.
    async fn apply_region_sync_fenced(
        &self,
        sync: &RegionSync,
        owner: &str,
    ) -> StoreResult<RegionSyncOutcome>;

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
    /// Runs newest first, strictly before `before` (an id), at most `limit`; with the total.
    async fn sync_runs_page(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<SyncRunRow>, u64)>;
    /// The newest run of every account·region.
    async fn latest_sync_runs(&self) -> StoreResult<Vec<SyncRunRow>>;

    /// Claims an account·region for a sync pass: succeeds when nobody (the caller included)
    /// holds an unexpired lease and its last pass finished before `due_before`. Exactly one
    /// caller wins, across replicas; the others learn why they lost.
    async fn claim_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> StoreResult<RegionClaim>;
    /// Extends the lease `owner` holds to `lease_until`; false when it no longer holds it.
    async fn renew_region(
        &self,
        account_id: &str,
        region: &str,
        owner: &str,
        lease_until: DateTime<Utc>,
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
    /// Counts for metrics: the stats of [`Store::compliance_figures`].
    async fn stats(&self) -> StoreResult<StoreStats> {
        Ok(self.compliance_figures().await?.stats)
    }

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
    /// The audit entries about `target` (e.g. a key ARN), newest first, at most `limit`.
    async fn audit_for_target(&self, target: &str, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// Recomputes the whole chain.
    async fn verify_audit(&self) -> StoreResult<AuditVerification>;

    /// Waives a finding, in one transaction with `audit` and a `finding.waived` outbox event.
    /// An active waiver of the same scope (same key or account, same rule) is superseded:
    /// revoked by the new one, so re-waiving renews. `NotFound` for no such finding,
    /// `Conflict` for a resolved one.
    async fn waive_finding(
        &self,
        finding_id: i64,
        waiver: &NewWaiver,
        audit: &NewAuditEvent,
    ) -> StoreResult<WaiverRow>;
    /// Revokes every active waiver covering the finding (its key's and its account's), in one
    /// transaction with `audit` and a `finding.waived` outbox event; returns them. `NotFound`
    /// when there is no such finding or nothing covers it.
    async fn revoke_waivers(
        &self,
        finding_id: i64,
        now: DateTime<Utc>,
        actor: &str,
        audit: &NewAuditEvent,
    ) -> StoreResult<Vec<WaiverRow>>;
    /// The waivers that could ever cover the finding (its key's and its account's for its
    /// rule), revoked and expired ones included, newest first.
    async fn finding_waivers(&self, finding_id: i64) -> StoreResult<Vec<WaiverRow>>;
    /// Sets or clears a finding's ticket reference, in one transaction with `audit`.
    async fn set_finding_ticket(
        &self,
        finding_id: i64,
        ticket: Option<&str>,
        audit: &NewAuditEvent,
    ) -> StoreResult<FindingRow>;
    /// Sets or clears a remediation's ticket reference, in one transaction with `audit`;
    /// `NotFound` for no such remediation. Later outbox events of the remediation carry it.
    async fn set_remediation_ticket(
        &self,
        id: i64,
        ticket: Option<&str>,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow>;

    /// Outbox events strictly after `after` (an id), oldest first, at most `limit`.
    async fn outbox_events(&self, after: Option<i64>, limit: u32) -> StoreResult<Vec<OutboxEvent>>;
    /// Fans out up to `limit` undispatched outbox events, oldest first: one pending delivery per
    /// subscribed webhook (idempotent, also across replicas), then stamps them dispatched.
    /// Returns how many events were dispatched.
    async fn dispatch_outbox(
        &self,
        webhooks: &[WebhookSubscription],
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Claims up to `limit` due pending deliveries to `webhooks` (URLs) for one attempt each:
    /// counts the attempt and leases the row to `owner` until `lease_until`. A row is claimed
    /// by one caller only, across replicas; an expired lease (a crashed sender) is claimable.
    async fn claim_deliveries(
        &self,
        webhooks: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records the end of a claimed attempt and releases the lease; false (and no change) when
    /// `owner` no longer holds it.
    async fn complete_delivery(
        &self,
        id: &str,
        owner: &str,
        attempt: &DeliveryAttempt,
    ) -> StoreResult<bool>;
    /// Deliveries with `status` (every status when `None`), in creation order, strictly after
    /// `after` (a seq), at most `limit`; with the total.
    async fn query_deliveries(
        &self,
        status: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<DeliveryRow>, u64)>;

    /// Stores a proposal in state `pending_approval`, in one transaction with `audit` and a
    /// `remediation.requested` outbox event. With an idempotency key already used, returns the
    /// remediation stored under it and `false` (nothing written).
    async fn create_remediation(
        &self,
        remediation: &NewRemediation,
        audit: &NewAuditEvent,
    ) -> StoreResult<(RemediationRow, bool)>;
    async fn get_remediation(&self, id: i64) -> StoreResult<Option<RemediationRow>>;
    /// The remediation stored under an idempotency key, if any.
    async fn remediation_by_idempotency_key(
        &self,
        key: &str,
    ) -> StoreResult<Option<RemediationRow>>;
    /// Remediations newest first, strictly before `before` (an id), at most `limit`; with the
    /// total.
    async fn list_remediations(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<(Vec<RemediationRow>, u64)>;
    /// Records `approver`'s approval of a pending, unexpired remediation, in one transaction
    /// with `audit`; when `required` distinct approvers are reached it becomes `approved` and a
    /// `remediation.approved` outbox event is written. `Conflict` for the requester, a second
    /// approval by the same approver, or a remediation not pending; `NotFound` for none.
    async fn approve_remediation(
        &self,
        id: i64,
        approval: &ApprovalRow,
        required: u32,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow>;
    /// Rejects a pending or approved remediation, in one transaction with `audit` and a
    /// `remediation.rejected` outbox event (state `rejected`); the comment is required.
    async fn reject_remediation(
        &self,
        id: i64,
        rejection: &ApprovalRow,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow>;
    /// Claims an approved, unexpired remediation for applying with one conditional update
    /// (`approved → applying`, recording `claimant` and `now` as the claim), in one transaction
    /// with `audit` and a `remediation.applying` outbox event. Exactly one of concurrent callers
    /// (also on several replicas) gets `Some`; the others get `None`.
    async fn claim_remediation(
        &self,
        id: i64,
        claimant: &str,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> StoreResult<Option<RemediationRow>>;
    /// Ends the apply claimed by `claimant` (`applying → applied|stale|failed`, or back to
    /// `approved` for [`ApplyResult::Unapplied`]), in one transaction with `audit` and a
    /// `remediation.applied|stale|failed|unapplied` outbox event. When an applied remediation
    /// is a rollback, the remediation it rolls back goes `applied → rolled_back` in the same
    /// transaction, with its own audit entry and `remediation.rolled_back` event. `Conflict`
    /// when the remediation is not `applying` under that claim: a lost claim is never
    /// overwritten.
    async fn finish_remediation(
        &self,
        id: i64,
        claimant: &str,
        result: &ApplyResult,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> StoreResult<RemediationRow>;
    /// Remediations `applying` under a claim made at or before `claimed_before` (a claim
    /// without a time counts from the row's last update), oldest first: what crash recovery
    /// may settle.
    async fn abandoned_remediations(
        &self,
        claimed_before: DateTime<Utc>,
    ) -> StoreResult<Vec<RemediationRow>>;
    /// Moves every pending or approved remediation whose `expires_at` is not after `now` to
    /// `expired`, each with an audit event (actor `keyward`) and a `remediation.expired` outbox
    /// event; returns their ids.
    async fn expire_remediations(&self, now: DateTime<Utc>) -> StoreResult<Vec<i64>>;

    /// Stores a dashboard session.
    async fn create_session(&self, session: &NewSession) -> StoreResult<()>;
    /// The session with this id hash; `None` when unknown, expired at `now`, or signed in with
    /// a token that has since been revoked.
    async fn get_session(
        &self,
        id_sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRow>>;
    /// Ends a session (sign-out); unknown ids are ignored.
    async fn delete_session(&self, id_sha256: &str) -> StoreResult<()>;
    /// Deletes sessions expired at `now`; returns how many.
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// The current [`ChangeMarker`], from indexed lookups only.
    async fn change_marker(&self, now: DateTime<Utc>) -> StoreResult<ChangeMarker>;
    /// Live compliance per account·region, ordered by account and region: the regions of
    /// [`Store::compliance_figures`].
    async fn compliance_by_region(&self) -> StoreResult<Vec<RegionCompliance>> {
        Ok(self.compliance_figures().await?.regions)
    }
    /// [`StoreStats`] and compliance per account·region from one snapshot, from a few indexed
    /// reads whose cost follows the live keys and the findings active waivers cover.
    async fn compliance_figures(&self) -> StoreResult<ComplianceFigures>;
    /// Records [`Store::compliance_by_region`] as the snapshot of `day`, replacing that day's;
    /// writes nothing when that day's stored figures are the same.
    async fn record_daily_snapshot(&self, day: NaiveDate, now: DateTime<Utc>) -> StoreResult<()>;
    /// Snapshots from `since` on, ordered by day, account and region.
    async fn daily_snapshots(&self, since: NaiveDate) -> StoreResult<Vec<DailySnapshot>>;
    /// Like [`Store::query_keys`], in `sort` order, skipping `offset` matches.
    async fn query_keys_sorted(
        &self,
        filter: &KeyFilter,
        sort: KeySort,
        descending: bool,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<KeyRow>, u64)>;

    /// Stores a successfully read IAM inventory (JSON text with its SHA-256) and clears the
    /// last error; returns true when the content changed. Writes nothing when neither the
    /// content changed nor an error is to be cleared.
    async fn save_iam_inventory(
        &self,
        account_id: &str,
        sha256: &str,
        inventory: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records a failed IAM read; the stored inventory stays as it was.
    async fn record_iam_error(
        &self,
        account_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn iam_inventory(&self, account_id: &str) -> StoreResult<Option<IamInventoryRow>>;
    /// Every key's access inputs for the reverse view: live keys with a readable policy.
    async fn key_policies(&self, account_id: Option<&str>) -> StoreResult<Vec<(KeyRow, String)>>;
}

/// Opens (creating if missing) the database a URL names and applies migrations. Reads judge
/// waivers against the system clock.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    connect_with_clock(url, Arc::new(SystemClock)).await
}

/// Like [`connect`], with the clock that reads judge waiver expiry against: a waived finding
/// reads `open` again once `clock` passes its waiver's expiry.
pub async fn connect_with_clock(url: &str, clock: Arc<dyn Clock>) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url).await?.with_clock(clock))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Arc::new(PostgresStore::connect(url).await?.with_clock(clock))
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    };
    store.migrate().await?;
    Ok(store)
}
