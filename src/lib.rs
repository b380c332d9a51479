//! Keyward keeps IAM out of AWS KMS keys: it audits key policies and fixes IAM delegation.

pub mod policy;
