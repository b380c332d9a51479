//! Throughput of the policy engine on the example key policies:
//! * `evaluate`: text in, findings out (the path of the sync and of `keyward check`). It reads
//!   the text straight into the rules' borrowed view and never builds a `Policy`.
//! * `evaluate_policy`: the rules alone, on an already parsed `Policy` (what remediation uses on
//!   the policies it builds).
//! * `parse`: `Policy::parse` alone, the lossless JSON model that `fix`, `diff` and `to_pretty`
//!   need and `evaluate` skips.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward::policy::{EvalContext, KeyManager, Policy, evaluate, evaluate_policy};
use std::hint::black_box;

const POLICIES: [(&str, &str); 6] = [
    (
        "default.json",
        include_str!("../examples/policies/default.json"),
    ),
    (
        "fixed.json",
        include_str!("../examples/policies/fixed.json"),
    ),
    (
        "public.json",
        include_str!("../examples/policies/public.json"),
    ),
    (
        "cross-account.json",
        include_str!("../examples/policies/cross-account.json"),
    ),
    (
        "aws-managed-ebs.json",
        include_str!("../examples/policies/aws-managed-ebs.json"),
    ),
    (
        "large.json",
        include_str!("../examples/policies/large.json"),
    ),
];

fn bench_policies(c: &mut Criterion) {
    let ctx = EvalContext {
        account_id: "111122223333",
        key_manager: KeyManager::Customer,
        trusted_accounts: &[],
    };
    for (name, text) in POLICIES {
        // Fail loudly rather than benchmark the KMS-INVALID shortcut by accident.
        let policy =
            Policy::parse(text).unwrap_or_else(|e| panic!("{name} is not a valid policy: {e}"));
        let mut group = c.benchmark_group(name);
        // One element is one policy, so criterion reports policies per second.
        group.throughput(Throughput::Elements(1));
        group.bench_function("evaluate", |b| {
            b.iter(|| evaluate(black_box(text), black_box(&ctx)))
        });
        group.bench_function("evaluate_policy", |b| {
            b.iter(|| evaluate_policy(black_box(&policy), black_box(&ctx)))
        });
        group.bench_function("parse", |b| b.iter(|| Policy::parse(black_box(text))));
        group.finish();
    }
}

criterion_group!(benches, bench_policies);
criterion_main!(benches);
