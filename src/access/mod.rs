//! Effective access to KMS keys (PURE: no I/O): who can use or manage a key through its key
//! policy, IAM identity policies (when the key delegates to IAM) and grants, and what a fix changes.

pub mod inventory;

pub use inventory::{IamGroup, IamInventory, IamRole, IamUser, InlinePolicy, ManagedPolicy};
