//! Keyward keeps IAM out of AWS KMS keys: it syncs key policies from many accounts, evaluates
//! them, reports, and fixes IAM delegation behind approvals.

pub mod access;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod config;
pub mod effective_access;
pub mod instance;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod remediation;
pub mod report;
pub mod store;
pub mod sync;
pub mod web;
