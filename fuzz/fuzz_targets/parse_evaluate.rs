//! Fuzzes the policy engine: evaluation never panics, the fast reader (`evaluate`) finds exactly
//! what the lossless one finds, and every document that parses survives serialize → parse
//! unchanged (the fix rewrites policies through that path).

#![no_main]

use keyward::policy::{EvalContext, KeyManager, Policy, evaluate, evaluate_policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let trusted = ["444455556666".to_string()];
    let parsed = Policy::parse(&text);
    for key_manager in [KeyManager::Customer, KeyManager::Aws] {
        let ctx = EvalContext {
            account_id: "111122223333",
            key_manager,
            trusted_accounts: &trusted,
        };
        let fast = evaluate(&text, &ctx);
        if let Ok(policy) = &parsed {
            assert_eq!(
                fast,
                evaluate_policy(policy, &ctx),
                "the readers disagree on:\n{text}"
            );
        }
    }
    if let Ok(policy) = parsed {
        let pretty = policy.to_pretty();
        let again = Policy::parse(&pretty)
            .unwrap_or_else(|e| panic!("to_pretty() output does not parse: {e}\n{pretty}"));
        assert_eq!(again, policy, "round trip changed the policy:\n{pretty}");
    }
});
