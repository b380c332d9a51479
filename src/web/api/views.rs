//! What the API shows: stable JSON shapes, separate from database rows so the two can evolve.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::store::{AuditEvent, FindingRow, GrantRecord, KeyRow, SyncRunRow};

/// A key in lists.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub arn: String,
    pub account_id: String,
    pub region: String,
    pub key_id: String,
    pub aliases: Vec<String>,
    pub description: String,
    /// `CUSTOMER` or `AWS`.
    pub key_manager: String,
    pub key_state: String,
    pub key_spec: String,
    pub key_usage: String,
    pub rotation_enabled: Option<bool>,
    pub policy_sha256: Option<String>,
    /// Why the policy could not be read, when it could not.
    pub policy_error: Option<String>,
    /// No open finding. Waived findings are accepted risk: a key whose only findings are
    /// waived is compliant.
    pub compliant: bool,
    /// Open findings not covered by a waiver.
    pub open_findings: u64,
    /// False for AWS-managed keys.
    pub remediable: bool,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for KeyView {
    fn from(k: KeyRow) -> Self {
        KeyView {
            compliant: k.open_findings == 0,
            arn: k.key.arn,
            account_id: k.key.account_id,
            region: k.key.region,
            key_id: k.key.key_id,
            aliases: k.key.aliases,
            description: k.key.description,
            key_manager: k.key.key_manager,
            key_state: k.key.key_state,
            key_spec: k.key.key_spec,
            key_usage: k.key.key_usage,
            rotation_enabled: k.key.rotation_enabled,
            policy_sha256: k.policy_sha256,
            policy_error: k.policy_error,
            open_findings: k.open_findings,
            remediable: k.remediable,
            first_seen: k.first_seen,
            last_seen: k.last_seen,
            deleted_at: k.deleted_at,
        }
    }
}

/// A grant on a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantView {
    pub grant_id: String,
    pub name: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub issuing_account: Option<String>,
    pub operations: Vec<String>,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> Self {
        GrantView {
            grant_id: g.grant_id,
            name: g.name,
            grantee_principal: g.grantee_principal,
            retiring_principal: g.retiring_principal,
            issuing_account: g.issuing_account,
            operations: g.operations,
        }
    }
}

/// A key with everything known about it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyDetail {
    #[serde(flatten)]
    pub key: KeyView,
    pub multi_region: bool,
    pub origin: String,
    pub creation_date: Option<DateTime<Utc>>,
    pub deletion_date: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
    pub grants: Vec<GrantView>,
    /// The rest of DescribeKey's answer: algorithms, expiry, key stores, multi-Region
    /// configuration, `Enabled`, and the operations KMS refused at the last sync.
    pub metadata: crate::store::KeyMetadataExtra,
    /// Open and waived findings.
    pub findings: Vec<FindingView>,
}

/// A finding.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingView {
    pub id: i64,
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    pub rule_id: String,
    pub severity: String,
    /// `open`, `resolved` or `waived` (open, covered by an active waiver until its expiry).
    pub status: String,
    pub statement_index: Option<i64>,
    pub sid: Option<String>,
    pub message: String,
    /// Why the finding is waived, while it is.
    pub waiver_reason: Option<String>,
    /// When the waiver lapses and the finding reads `open` again.
    pub waiver_expires_at: Option<DateTime<Utc>>,
    /// A ticketing system's reference, set with `PATCH /api/v1/findings/{id}`.
    pub ticket: Option<String>,
    /// The rule's title, rationale and fix, from the catalogue.
    pub title: String,
    pub remediation: String,
    /// The policy version the finding was judged on.
    pub policy_sha256: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<FindingRow> for FindingView {
    fn from(f: FindingRow) -> Self {
        let info = f
            .rule_id
            .parse::<crate::policy::RuleId>()
            .ok()
            .map(|r| r.info());
        FindingView {
            title: info.map(|i| i.title.to_string()).unwrap_or_default(),
            remediation: info.map(|i| i.remediation.to_string()).unwrap_or_default(),
            id: f.id,
            key_arn: f.key_arn,
            account_id: f.account_id,
            region: f.region,
            rule_id: f.rule_id,
            severity: f.severity,
            status: f.status,
            statement_index: f.statement_index,
            sid: f.sid,
            message: f.message,
            waiver_reason: f.waiver_reason,
            waiver_expires_at: f.waiver_expires_at,
            ticket: f.ticket,
            policy_sha256: f.policy_sha256,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            resolved_at: f.resolved_at,
        }
    }
}

/// A key's current policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyView {
    pub key_arn: String,
    pub sha256: String,
    /// Exactly as GetKeyPolicy returned it.
    pub text: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One version of a key's policy, with what changed since the version before it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyVersionView {
    pub sha256: String,
    pub text: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Statement-level diff from the previous version (absent for the first version or when
    /// either version is not a valid policy).
    #[schema(value_type = Option<Object>)]
    pub diff: Option<serde_json::Value>,
    /// The same diff for people.
    pub diff_text: Option<String>,
}

/// A sync run of one account·region.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SyncRunView {
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

impl From<SyncRunRow> for SyncRunView {
    fn from(r: SyncRunRow) -> Self {
        SyncRunView {
            id: r.id,
            account_id: r.account_id,
            region: r.region,
            started_at: r.started_at,
            finished_at: r.finished_at,
            status: r.status,
            keys_seen: r.keys_seen,
            keys_changed: r.keys_changed,
            policy_versions_added: r.policy_versions_added,
            findings_opened: r.findings_opened,
            findings_resolved: r.findings_resolved,
            keys_deleted: r.keys_deleted,
            error: r.error,
        }
    }
}

/// An audit log entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub hash: String,
    pub prev_hash: String,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            hash: e.hash,
            prev_hash: e.prev_hash,
        }
    }
}

/// A configured account with the last sync of each of its regions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub regions: Vec<String>,
    pub last_sync: Vec<SyncRunView>,
}

/// Counts for a dashboard or a ticketing system's overview.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    pub accounts: u64,
    pub keys: u64,
    pub keys_compliant: u64,
    pub keys_noncompliant: u64,
    /// Compliant keys as a percentage of all live keys (100 when there are none).
    pub compliance_percent: f64,
    /// Open KMS-DELEGATION findings: keys whose policy lets IAM grant them.
    pub delegation_findings: u64,
    pub open_findings_by_severity: BTreeMap<String, u64>,
    pub open_findings_by_rule: BTreeMap<String, u64>,
    pub last_sync: Vec<SyncRunView>,
}
