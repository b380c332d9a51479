//! Compliance exports of the stored state. JSON now; CSV, OCSF and the printable report build
//! on the same rows.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::{Store, StoreResult};

/// The `keyward export --format json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonExport {
    pub generated_at: DateTime<Utc>,
    pub keys: Vec<ExportKey>,
    pub findings: Vec<ExportFinding>,
}

/// A live key in the export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportKey {
    pub arn: String,
    pub account_id: String,
    pub region: String,
    pub key_id: String,
    pub aliases: Vec<String>,
    pub key_manager: String,
    pub key_state: String,
    pub policy_sha256: Option<String>,
    /// No open finding.
    pub compliant: bool,
}

/// A finding in the export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportFinding {
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    pub rule_id: String,
    pub severity: String,
    pub status: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub policy_sha256: Option<String>,
    pub message: String,
}

/// Builds the JSON export: live keys and open findings (resolved ones too when asked).
pub async fn json_export(
    store: &dyn Store,
    include_resolved: bool,
    now: DateTime<Utc>,
) -> StoreResult<JsonExport> {
    let keys = store
        .list_keys(false)
        .await?
        .into_iter()
        .map(|k| ExportKey {
            compliant: k.open_findings == 0,
            arn: k.key.arn,
            account_id: k.key.account_id,
            region: k.key.region,
            key_id: k.key.key_id,
            aliases: k.key.aliases,
            key_manager: k.key.key_manager,
            key_state: k.key.key_state,
            policy_sha256: k.policy_sha256,
        })
        .collect();
    let findings = store
        .list_findings(include_resolved)
        .await?
        .into_iter()
        .map(|f| ExportFinding {
            key_arn: f.key_arn,
            account_id: f.account_id,
            region: f.region,
            rule_id: f.rule_id,
            severity: f.severity,
            status: f.status,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            policy_sha256: f.policy_sha256,
            message: f.message,
        })
        .collect();
    Ok(JsonExport {
        generated_at: now,
        keys,
        findings,
    })
}
