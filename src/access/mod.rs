//! Effective access to KMS keys (PURE: no I/O): who can use or manage a key through its key
//! policy, IAM identity policies (when the key delegates to IAM) and grants, and what a fix changes.
//!
//! Semantics, where AWS leaves a choice (the "why" of each is at the code):
//! * Identity-policy Allows count only when the key policy delegates (KMS-DELEGATION, reusing
//!   `policy::rules::delegation_of`); identity-policy Denies always apply, since an explicit
//!   Deny in any policy wins.
//! * Conditions are decided only when they test who the caller is (`aws:PrincipalType`,
//!   `aws:PrincipalAccount`, `kms:CallerAccount`, `aws:PrincipalArn`); any other condition makes
//!   the entry `conditional` and is shown on the reason.
//! * SCPs, session policies and grant constraints are out of scope.

mod catalogue;
mod conditions;
mod decrypt_all;
mod evaluate;
mod identity;
mod impact;
mod index;
pub mod inventory;
mod reverse;
mod table;

pub use catalogue::{ActionGroup, ActionMask, KMS_KEY_ACTIONS, group_of};
pub use decrypt_all::{DECRYPT_ALL_KEYS_RULE, DecryptAllKeysPolicy, PolicyKind, decrypt_all_keys};
pub use evaluate::{AccessError, AccessInput, GrantInput, KeyPolicyInput, evaluate_access};
pub use impact::{AccessImpact, PrincipalChange, PrincipalKept, impact};
pub use index::AccessIndex;
pub use inventory::{IamGroup, IamInventory, IamRole, IamUser, InlinePolicy, ManagedPolicy};
pub use reverse::{KeyAccess, KeyInput, PrincipalKeys, keys_for_principal};
pub use table::{
    AccessFilter, AccessLevel, AccessTable, ActionAccess, PrincipalAccess, PrincipalType, Reason,
    Reasons, StatementRef,
};
