//! OCSF: one Compliance Finding (class 2003, schema 1.1.0) per finding, as a JSON array.
//!
//! Required by OCSF 1.1.0 for the class: `activity_id`, `category_uid`, `class_uid`,
//! `compliance` (with `standards`), `finding_info` (with `uid`, `title`), `metadata` (with
//! `product` and `version`), `severity_id`, `time`, `type_uid`; and `cloud` (with `provider`)
//! because the events declare the `cloud` profile. 1.1.0 names the checked resource `resource`
//! (`resources` only arrived in 1.3.0).
//!
//! Keyward's lifecycle in OCSF terms:
//! | Keyward  | activity   | finding status   | compliance status |
//! |----------|------------|------------------|-------------------|
//! | open     | 1 Create   | 1 New            | 3 Fail            |
//! | waived   | 2 Update   | 3 Suppressed     | 3 Fail            |
//! | resolved | 3 Close    | 4 Resolved       | 1 Pass            |
//!
//! A waiver accepts the risk; it does not make the control pass, so it stays Fail.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::rows::{FindingPages, Lookup, ReportFinding, finding_filters};
use super::{Out, ReportError, ReportOptions};
use crate::policy::RuleId;
use crate::store::Store;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";
const CATEGORY_UID: u32 = 2;
const CLASS_UID: u32 = 2003;
/// The standard every Keyward control belongs to.
const STANDARD: &str = "Keyward KMS key policy rules";
/// OCSF `account.type_id` 10: AWS Account.
const AWS_ACCOUNT: u32 = 10;

pub(super) async fn write(
    store: &dyn Store,
    options: &ReportOptions,
    out: &mut Out<'_>,
) -> Result<(), ReportError> {
    let mut lookup = Lookup::new(store).await?;
    out.push("[");
    let mut first = true;
    for filter in finding_filters(options.include_resolved) {
        let mut findings = FindingPages::new(store, filter);
        while let Some(batch) = findings.next().await? {
            for row in batch {
                let finding = lookup.finding(row).await?;
                out.push(if first { "\n" } else { ",\n" });
                first = false;
                out.push_json(&event(&finding))?;
                out.flush_if_full().await?;
            }
        }
    }
    out.push(if first { "]\n" } else { "\n]\n" });
    Ok(())
}

/// OCSF `severity_id`: 1 Informational … 5 Critical; 0 Unknown for anything else.
pub fn severity_id(severity: &str) -> (u8, &'static str) {
    match severity {
        "info" => (1, "Informational"),
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

/// A stable finding uid: the same key, rule and locator give the same uid in every export and
/// every database (row ids are not portable).
fn finding_uid(f: &ReportFinding) -> String {
    let mut h = Sha256::new();
    for part in [f.key_arn.as_str(), f.rule_id.as_str(), f.locator.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("keyward:{}", hex::encode(h.finalize()))
}

fn ms(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// The Compliance Finding event of one finding.
pub(crate) fn event(f: &ReportFinding) -> Value {
    let (activity_id, activity, status_id, status, compliance_id, compliance) =
        match f.status.as_str() {
            "resolved" => (3, "Close", 4, "Resolved", 1, "Pass"),
            "waived" => (2, "Update", 3, "Suppressed", 3, "Fail"),
            _ => (1, "Create", 1, "New", 3, "Fail"),
        };
    let (severity_id, severity) = severity_id(&f.severity);
    let rule = f.rule_id.parse::<RuleId>().ok().map(RuleId::info);
    let title = rule.map_or_else(|| f.rule_id.clone(), |r| r.title.to_string());
    // The event reports the state as of the last evaluation (or the resolution).
    let time = f
        .resolved_at
        .filter(|_| f.status == "resolved")
        .unwrap_or(f.last_seen);
    let mut event = json!({
        "activity_id": activity_id,
        "activity_name": activity,
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Compliance Finding",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Compliance Finding: {activity}"),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": ms(time),
        "message": f.message,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": ["cloud"],
            "product": {
                "name": "Keyward",
                "vendor_name": "Keyward",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "finding_info": {
            "uid": finding_uid(f),
            "title": title,
            "desc": f.message,
            "created_time": ms(f.first_seen),
            "first_seen_time": ms(f.first_seen),
            "last_seen_time": ms(f.last_seen),
        },
        "compliance": {
            "control": f.rule_id,
            "standards": [STANDARD],
            "status_id": compliance_id,
            "status": compliance,
            "status_detail": f.message,
        },
        "resource": {
            "uid": f.key_arn,
            "name": f.aliases.first().map_or_else(|| key_id(&f.key_arn), String::clone),
            "type": "AWS::KMS::Key",
            "region": f.region,
            "data": { "aliases": f.aliases },
        },
        "cloud": {
            "provider": "AWS",
            "region": f.region,
            "account": {
                "uid": f.account_id,
                "type_id": AWS_ACCOUNT,
                "type": "AWS Account",
            },
        },
        "unmapped": {
            "keyward": {
                "finding_id": f.id,
                "status": f.status,
                "locator": f.locator,
                "statement_index": f.statement_index,
                "sid": f.sid,
                "policy_sha256": f.policy_sha256,
                "policy_fetched_at": f.policy_fetched_at.map(ms),
                "waiver_reason": f.waiver.as_ref().map(|w| &w.reason),
                "waiver_expires_at": f.waiver.as_ref().and_then(|w| w.expires_at).map(ms),
            },
        },
    });
    if !f.account_name.is_empty() {
        event["cloud"]["account"]["name"] = json!(f.account_name);
    }
    if let Some(rule) = rule {
        event["remediation"] = json!({ "desc": rule.remediation });
        event["unmapped"]["keyward"]["references"] = json!(rule.references);
    }
    if let Some(resolved_at) = f.resolved_at {
        event["finding_info"]["modified_time"] = json!(ms(resolved_at));
    }
    event
}

/// The key id at the end of a key ARN.
fn key_id(arn: &str) -> String {
    arn.rsplit_once("key/")
        .map_or(arn, |(_, id)| id)
        .to_string()
}
