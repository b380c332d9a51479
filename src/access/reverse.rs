//! The reverse view: which keys one principal can use, and with which actions.

use serde::{Deserialize, Serialize};

use super::evaluate::{AccessInput, GrantInput, KeyPolicyInput, evaluate_principal};
use super::index::AccessIndex;
use super::table::ActionAccess;

/// One key as the reverse view needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInput {
    pub key_arn: String,
    pub account_id: String,
    /// The key policy text.
    pub policy: String,
    pub grants: Vec<GrantInput>,
}

/// What a principal can do with one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAccess {
    pub key_arn: String,
    pub actions: Vec<ActionAccess>,
}

/// The keys a principal can use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrincipalKeys {
    /// The principal as asked.
    pub principal: String,
    /// The principal evaluated: the role of a session ARN when the inventory knows it.
    pub evaluated_as: String,
    /// Keys with at least one action, in the order given.
    pub keys: Vec<KeyAccess>,
    /// Keys whose policy is invalid: nobody's access can be read from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_keys: Vec<String>,
}

/// Which of `keys` the principal can use. An assumed-role session ARN is evaluated as its role
/// (a session has its role's permissions); key-policy statements that name the session itself
/// are missed then, which is rare and not worth a second evaluation.
pub fn keys_for_principal(
    index: Option<&AccessIndex>,
    keys: &[KeyInput],
    principal: &str,
) -> PrincipalKeys {
    let evaluated_as = match index.and_then(|i| i.identity(principal)) {
        Some(id) => id.arn.clone(),
        None => crate::policy::matching::session_to_role_arn(principal),
    };
    let mut out = PrincipalKeys {
        principal: principal.to_string(),
        evaluated_as: evaluated_as.clone(),
        keys: Vec::new(),
        unreadable_keys: Vec::new(),
    };
    for key in keys {
        let input = AccessInput {
            key_arn: &key.key_arn,
            account_id: &key.account_id,
            key_policy: KeyPolicyInput::Text(&key.policy),
            index: index.filter(|i| i.account_id() == key.account_id),
            grants: &key.grants,
        };
        match evaluate_principal(&input, &evaluated_as) {
            Ok(actions) if !actions.is_empty() => out.keys.push(KeyAccess {
                key_arn: key.key_arn.clone(),
                actions,
            }),
            Ok(_) => {}
            Err(_) => out.unreadable_keys.push(key.key_arn.clone()),
        }
    }
    out
}
