//! The key-policy engine. Pure: no I/O, no async, no database, no AWS SDK — it must be exactly
//! right, so everything here is plain data in, plain data out.

pub(crate) mod actions;
pub mod condition;
pub mod diff;
pub mod document;
pub mod fix;
pub mod matching;
pub mod rules;
pub(crate) mod view;

pub use document::{InvalidPolicy, Policy, Statement};
pub use rules::{
    EvalContext, Finding, KeyFacts, KeyManager, RULESET_VERSION, RuleId, Severity, evaluate,
    evaluate_key, evaluate_policy, unreadable,
};
