//! Prometheus metrics: what the sync did, what AWS answered, and how compliant the keys are.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::StoreStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    account: String,
    region: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComplianceLabels {
    compliant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    severity: String,
}

/// All of Keyward's metrics, registered once and shared.
pub struct Metrics {
    registry: Registry,
    aws_calls: Family<OperationLabels, Counter>,
    aws_errors: Family<ErrorLabels, Counter>,
    sync_duration: Family<RegionLabels, Histogram>,
    iam_reads: Family<AccountLabels, Counter>,
    keys: Family<ComplianceLabels, Gauge>,
    findings: Family<RuleLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let aws_calls = Family::<OperationLabels, Counter>::default();
        let aws_errors = Family::<ErrorLabels, Counter>::default();
        let sync_duration = Family::<RegionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
        });
        let iam_reads = Family::<AccountLabels, Counter>::default();
        let keys = Family::<ComplianceLabels, Gauge>::default();
        let findings = Family::<RuleLabels, Gauge>::default();
        registry.register("aws_calls", "AWS API calls by operation", aws_calls.clone());
        registry.register(
            "aws_errors",
            "AWS API calls that failed after retries, by operation and kind",
            aws_errors.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Duration of one account·region sync pass",
            sync_duration.clone(),
        );
        registry.register(
            "iam_inventory_reads",
            "IAM inventory reads (GetAccountAuthorizationDetails) by account and outcome",
            iam_reads.clone(),
        );
        registry.register("keys", "Live keys by compliance", keys.clone());
        registry.register(
            "open_findings",
            "Open findings by rule and severity",
            findings.clone(),
        );
        Metrics {
            registry,
            aws_calls,
            aws_errors,
            sync_duration,
            iam_reads,
            keys,
            findings,
        }
    }

    /// Counts one AWS API call.
    pub fn aws_call(&self, operation: &str) {
        self.aws_calls
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .inc();
    }

    /// Counts one failed AWS API call; `kind` is e.g. `access_denied`, `throttled`.
    pub fn aws_error(&self, operation: &str, kind: &str) {
        self.aws_errors
            .get_or_create(&ErrorLabels {
                operation: operation.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records how long an account·region pass took.
    pub fn observe_sync(&self, account: &str, region: &str, ok: bool, seconds: f64) {
        self.sync_duration
            .get_or_create(&RegionLabels {
                account: account.to_string(),
                region: region.to_string(),
                outcome: if ok { "succeeded" } else { "failed" }.to_string(),
            })
            .observe(seconds);
    }

    /// Counts one IAM inventory read of an account.
    pub fn observe_iam_read(&self, account: &str, ok: bool) {
        self.iam_reads
            .get_or_create(&AccountLabels {
                account: account.to_string(),
                outcome: if ok { "succeeded" } else { "failed" }.to_string(),
            })
            .inc();
    }

    /// Replaces the compliance gauges with the store's current counts.
    pub fn set_stats(&self, stats: &StoreStats) {
        let set = |compliant: &str, n: u64| {
            self.keys
                .get_or_create(&ComplianceLabels {
                    compliant: compliant.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("true", stats.keys_compliant);
        set("false", stats.keys_noncompliant);
        // Rules with no open findings any more must drop to absent, not keep their last value.
        self.findings.clear();
        for (rule, severity, n) in &stats.open_findings {
            self.findings
                .get_or_create(&RuleLabels {
                    rule: rule.clone(),
                    severity: severity.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.aws_call("ListKeys");
        m.aws_call("ListKeys");
        m.aws_error("GetKeyPolicy", "access_denied");
        m.observe_sync("111122223333", "us-east-1", true, 1.5);
        m.set_stats(&StoreStats {
            keys_compliant: 3,
            keys_noncompliant: 2,
            open_findings: vec![("KMS-DELEGATION".into(), "high".into(), 2)],
        });
        let text = m.render();
        assert!(
            text.contains("keyward_aws_calls_total{operation=\"ListKeys\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "keyward_aws_errors_total{operation=\"GetKeyPolicy\",kind=\"access_denied\"} 1"
        ));
        assert!(text.contains("keyward_keys{compliant=\"false\"} 2"));
        assert!(
            text.contains("keyward_open_findings{rule=\"KMS-DELEGATION\",severity=\"high\"} 2")
        );
        assert!(text.contains("keyward_sync_duration_seconds_count{account=\"111122223333\",region=\"us-east-1\",outcome=\"succeeded\"} 1"));
        m.set_stats(&StoreStats::default());
        assert!(!m.render().contains("KMS-DELEGATION"));
    }
}
