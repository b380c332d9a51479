//! The summary block: compliance of the live keys and open findings by rule, severity and
//! account, counted from the rows as they stream past.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

use crate::store::{FindingRow, KeyRow};

/// Compliance at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportSummary {
    /// Live keys.
    pub keys: u64,
    /// Live keys without an open finding.
    pub keys_compliant: u64,
    pub keys_noncompliant: u64,
    /// Compliant keys as a percentage of live keys, one decimal (100 when there are none).
    pub compliance_percent: f64,
    pub open_findings: u64,
    pub open_findings_by_severity: BTreeMap<String, u64>,
    pub open_findings_by_rule: BTreeMap<String, u64>,
    /// Every configured account and every other account that has keys, by id.
    pub accounts: Vec<AccountTotals>,
}

/// One account's share of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AccountTotals {
    pub account_id: String,
    /// Empty for an account that is no longer configured.
    pub account_name: String,
    pub keys: u64,
    pub keys_compliant: u64,
    pub keys_noncompliant: u64,
    pub compliance_percent: f64,
    pub open_findings: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    keys: u64,
    compliant: u64,
    open_findings: u64,
}

/// Counts keys and open findings as they are written.
#[derive(Debug, Default)]
pub(crate) struct SummaryBuilder {
    accounts: BTreeMap<String, Counts>,
    by_severity: BTreeMap<String, u64>,
    by_rule: BTreeMap<String, u64>,
}

impl SummaryBuilder {
    /// Counts a live key.
    pub(crate) fn add_key(&mut self, key: &KeyRow) {
        if key.deleted_at.is_some() {
            return;
        }
        let counts = self.accounts.entry(key.key.account_id.clone()).or_default();
        counts.keys += 1;
        if key.open_findings == 0 {
            counts.compliant += 1;
        }
    }

    /// Counts a finding if it is open; other statuses do not make a key non-compliant.
    pub(crate) fn add_finding(&mut self, finding: &FindingRow) {
        if finding.status != "open" {
            return;
        }
        self.accounts
            .entry(finding.account_id.clone())
            .or_default()
            .open_findings += 1;
        *self
            .by_severity
            .entry(finding.severity.clone())
            .or_insert(0) += 1;
        *self.by_rule.entry(finding.rule_id.clone()).or_insert(0) += 1;
    }

    /// The summary; configured accounts without keys are listed too.
    pub(crate) fn finish(mut self, account_names: &HashMap<String, String>) -> ReportSummary {
        for id in account_names.keys() {
            self.accounts.entry(id.clone()).or_default();
        }
        let total = self
            .accounts
            .values()
            .fold(Counts::default(), |acc, c| Counts {
                keys: acc.keys + c.keys,
                compliant: acc.compliant + c.compliant,
                open_findings: acc.open_findings + c.open_findings,
            });
        ReportSummary {
            keys: total.keys,
            keys_compliant: total.compliant,
            keys_noncompliant: total.keys - total.compliant,
            compliance_percent: percent(total.compliant, total.keys),
            open_findings: total.open_findings,
            open_findings_by_severity: self.by_severity,
            open_findings_by_rule: self.by_rule,
            accounts: self
                .accounts
                .into_iter()
                .map(|(id, c)| AccountTotals {
                    account_name: account_names.get(&id).cloned().unwrap_or_default(),
                    account_id: id,
                    keys: c.keys,
                    keys_compliant: c.compliant,
                    keys_noncompliant: c.keys - c.compliant,
                    compliance_percent: percent(c.compliant, c.keys),
                    open_findings: c.open_findings,
                })
                .collect(),
        }
    }
}

/// One decimal, like `GET /summary`: enough for people, stable for tests.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_has_one_decimal_and_is_full_without_keys() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(2, 3), 66.7);
        assert_eq!(percent(0, 0), 100.0);
        assert_eq!(percent(0, 5), 0.0);
    }
}
