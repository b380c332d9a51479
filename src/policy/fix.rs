//! The remediation rewrite: stop IAM delegation the way AWS recommends, without locking anyone
//! out, and refuse with a reason whenever the result would not be safe to apply.

use serde_json::{Map, Value, json};

use super::condition::{PrincipalType, admitted_principal_types, parse_block};
use super::document::{Policy, Statement};
use super::matching::{
    is_account_id, is_account_principal, is_iam_identity_of, session_to_role_arn,
};
use super::rules::delegation_of;

/// The condition key and operator of AWS's pin.
const PRINCIPAL_TYPE: &str = "aws:PrincipalType";
const PIN_OPERATOR: &str = "StringEquals";

/// The Sid AWS's guidance gives the pinned root statement.
pub const ROOT_SID: &str = "EnableRootAccessAndPreventPermissionDelegation";
/// The Sid of the key-administrator statement, as in the AWS default key policy.
pub const ADMIN_SID: &str = "Allow access for Key Administrators";
/// The Sid of the statement that keeps Keyward's auditor able to read the key.
pub const AUDITOR_SID: &str = "KeywardAuditorReadAccess";
/// The Sid of the statement that keeps Keyward able to apply (and roll back) key policies.
pub const REMEDIATOR_SID: &str = "KeywardRemediatorPolicyAccess";

/// The key-administrator actions of the AWS Knowledge Center article (no cryptographic use).
pub const KEY_ADMIN_ACTIONS: [&str; 15] = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
];

/// What the sync needs to read a key; the auditor must keep them or Keyward goes blind.
pub const AUDITOR_ACTIONS: [&str; 5] = [
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListResourceTags",
    "kms:ListGrants",
];

/// What applying, verifying and rolling back a policy needs.
pub const REMEDIATOR_ACTIONS: [&str; 3] =
    ["kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"];

/// The largest key policy KMS accepts, in bytes.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Who the fixed policy must name.
#[derive(Debug, Clone, Copy)]
pub struct FixContext<'a> {
    /// The account that owns the key.
    pub account_id: &'a str,
    /// IAM roles/users of the account to name as administrators if the policy has none.
    pub key_admins: &'a [String],
    /// Keyward's reading principal in the account: keeps read access.
    pub auditor: Option<&'a str>,
    /// The principal that will call PutKeyPolicy: keeps kms:PutKeyPolicy.
    pub caller: Option<&'a str>,
}

/// A policy the fix changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed {
    pub policy: Policy,
    /// Pretty JSON: what Keyward prints and submits.
    pub text: String,
    /// One line per change, for people.
    pub changes: Vec<String>,
}

/// The result of a fix that was not refused.
#[derive(Debug, Clone, PartialEq)]
pub enum FixOutcome {
    /// The policy already satisfies everything the fix would do.
    Unchanged,
    Fixed(Fixed),
}

/// Why the fix will not produce a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FixRefused {
    pub reason: String,
    /// What the refusal is about, so callers can say what to change.
    pub kind: RefusalKind,
}

/// The kinds of [`FixRefused`]: each asks for a different remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No administrator would remain and none is configured.
    NoAdministrator,
    /// A configured key administrator is not an IAM role or user of the key's account.
    InvalidAdministrator,
    /// Keyward's auditor would lose read access.
    Auditor,
    /// The principal that applies the policy would lose `kms:PutKeyPolicy`.
    Caller,
    /// The fixed policy would exceed the key policy size limit.
    TooLarge,
    /// Anything else (an invalid account id, an internal check).
    Other,
}

fn refuse(reason: impl Into<String>) -> FixRefused {
    refuse_as(RefusalKind::Other, reason)
}

fn refuse_as(kind: RefusalKind, reason: impl Into<String>) -> FixRefused {
    FixRefused {
        reason: reason.into(),
        kind,
    }
}

/// Rewrites `policy` per DESIGN.md "The fix": pin every delegating root statement to
/// `aws:PrincipalType = Account`, name key administrators if none would remain, keep the
/// auditor's read access and the caller's `kms:PutKeyPolicy`; everything else is kept as is.
pub fn fix(policy: &Policy, ctx: &FixContext<'_>) -> Result<FixOutcome, FixRefused> {
    let account = ctx.account_id;
    if !is_account_id(account) {
        return Err(refuse(format!(
            "{account:?} is not a 12-digit AWS account id"
        )));
    }
    let admins = ctx
        .key_admins
        .iter()
        .map(|a| {
            let role = session_to_role_arn(a);
            if is_iam_identity_of(&role, account) {
                Ok(role)
            } else {
                Err(refuse_as(
                    RefusalKind::InvalidAdministrator,
                    format!(
                        "key administrator {a:?} is not an IAM role or user of account {account}"
                    ),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let auditor = ctx.auditor.map(session_to_role_arn);
    let caller = ctx.caller.map(session_to_role_arn);

    let mut changes = Vec::new();
    let mut statements: Vec<Value> = Vec::with_capacity(policy.statements().len() + 3);
    let mut sids: Vec<String> = policy
        .statements()
        .iter()
        .filter_map(|s| s.sid.clone())
        .collect();
    let mut first_root_position = None;
    for st in policy.statements() {
        if !delegation_of(st, account) {
            statements.push(Value::Object(st.raw().clone()));
            continue;
        }
        let (root, rest) = split_root(st, account);
        // A split statement keeps its Sid on the rest, so the root part may not take it over.
        let own = if rest.is_none() {
            st.sid.as_deref()
        } else {
            None
        };
        let sid = unique_sid(ROOT_SID, &mut sids, own);
        first_root_position.get_or_insert(statements.len());
        let (pinned, notes) = pin_to_account(root, &sid, account, &st.label())?;
        statements.push(Value::Object(pinned));
        match rest {
            Some(rest) => {
                changes.push(format!(
                    "{}: moved the account principal into its own statement \"{sid}\" pinned to aws:PrincipalType = Account; the other principals keep their access",
                    st.label()
                ));
                statements.push(Value::Object(rest));
            }
            None => changes.push(format!(
                "{}: renamed to \"{sid}\" and pinned to aws:PrincipalType = Account, so IAM policies can no longer grant the key",
                st.label()
            )),
        }
        changes.extend(notes);
    }
    // Named statements go right after the root statement, where the AWS default policy has them.
    let mut insert_at = first_root_position.map_or(statements.len(), |i| i + 1);
    let mut add = |statements: &mut Vec<Value>, st: Value| {
        statements.insert(insert_at, st);
        insert_at += 1;
    };

    let staged = reparse(policy, &statements)?;
    if super::rules::administrators(&staged, account).is_empty() {
        if admins.is_empty() {
            return Err(refuse_as(
                RefusalKind::NoAdministrator,
                format!(
                    "no IAM role or user of account {account} would be allowed kms:PutKeyPolicy once IAM delegation is removed; configure key administrators (key_admins, or --admin ARN) so the fix can name them"
                ),
            ));
        }
        let sid = unique_sid(ADMIN_SID, &mut sids, None);
        add(
            &mut statements,
            named_statement(&sid, &admins, &KEY_ADMIN_ACTIONS),
        );
        changes.push(format!(
            "added \"{sid}\" for {} so the key keeps an administrator",
            admins.join(", ")
        ));
    }
    if let Some(auditor) = auditor.as_deref() {
        let staged = reparse(policy, &statements)?;
        if !is_account_principal(auditor, account)
            && !explicitly_allowed(&staged, auditor, &AUDITOR_ACTIONS)
        {
            let sid = unique_sid(AUDITOR_SID, &mut sids, None);
            add(
                &mut statements,
                named_statement(&sid, &[auditor.to_string()], &AUDITOR_ACTIONS),
            );
            changes.push(format!(
                "added \"{sid}\" so Keyward's auditor {auditor} can still read the key"
            ));
        }
    }
    if let Some(caller) = caller.as_deref() {
        let staged = reparse(policy, &statements)?;
        if !is_account_principal(caller, account)
            && !explicitly_allowed(&staged, caller, &REMEDIATOR_ACTIONS)
        {
            let sid = unique_sid(REMEDIATOR_SID, &mut sids, None);
            add(
                &mut statements,
                named_statement(&sid, &[caller.to_string()], &REMEDIATOR_ACTIONS),
            );
            changes.push(format!(
                "added \"{sid}\" so {caller} keeps kms:PutKeyPolicy (AWS refuses a policy that locks its caller out)"
            ));
        }
    }

    let fixed = reparse(policy, &statements)?;
    if fixed.raw() == policy.raw() {
        return Ok(FixOutcome::Unchanged);
    }
    check_safety(
        policy,
        &fixed,
        account,
        auditor.as_deref(),
        caller.as_deref(),
    )?;
    let text = fixed.to_pretty();
    if text.len() > MAX_POLICY_BYTES {
        return Err(refuse_as(
            RefusalKind::TooLarge,
            format!(
                "the fixed policy would be {} bytes, over the {MAX_POLICY_BYTES}-byte key policy limit",
                text.len()
            ),
        ));
    }
    Ok(FixOutcome::Fixed(Fixed {
        policy: fixed,
        text,
        changes,
    }))
}

/// The document with its statements replaced, parsed again (the fix only ever edits valid JSON
/// policies, so a failure here is a bug that must stop the fix, not a panic).
fn reparse(original: &Policy, statements: &[Value]) -> Result<Policy, FixRefused> {
    let mut raw = original.raw().clone();
    let value = if statements.len() == 1 && raw.get("Statement").is_some_and(Value::is_object) {
        statements[0].clone()
    } else {
        Value::Array(statements.to_vec())
    };
    raw.insert("Statement".to_string(), value);
    Policy::from_value(Value::Object(raw))
        .map_err(|e| refuse(format!("the fixed policy would not be valid: {e}")))
}

/// Splits a delegating statement into the account-principal part and, when the statement also
/// names others, the rest, so pinning the root does not cut the others' access.
fn split_root(st: &Statement, account: &str) -> (Map<String, Value>, Option<Map<String, Value>>) {
    let raw = st.raw();
    let Some(Value::Object(principal)) = raw.get("Principal") else {
        return (raw.clone(), None);
    };
    let mut roots = Vec::new();
    let mut others_aws = Vec::new();
    for p in st.principals.aws() {
        if is_account_principal(p, account) {
            roots.push(p.to_string());
        } else {
            others_aws.push(p.to_string());
        }
    }
    let has_other_kinds = principal.keys().any(|k| k != "AWS");
    if others_aws.is_empty() && !has_other_kinds {
        return (raw.clone(), None);
    }
    let mut root = raw.clone();
    root.insert("Principal".into(), json!({ "AWS": one_or_many(&roots) }));
    let mut rest = raw.clone();
    let mut rest_principal = principal.clone();
    if others_aws.is_empty() {
        rest_principal.shift_remove("AWS");
    } else {
        rest_principal.insert("AWS".into(), one_or_many(&others_aws));
    }
    rest.insert("Principal".into(), Value::Object(rest_principal));
    (root, Some(rest))
}

fn one_or_many(values: &[String]) -> Value {
    match values {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    }
}

/// Sets the Sid and merges `StringEquals aws:PrincipalType = Account` into the conditions,
/// returning the statement and a line for each existing `aws:PrincipalType` entry it touched.
///
/// No condition entry is ever dropped: conditions are ANDed, so keeping an entry beside the pin
/// only narrows the statement further. The one place the pin and an entry meet is a
/// `StringEquals aws:PrincipalType` already in the statement (JSON allows the key once per
/// operator): its values are narrowed to `Account`, which is what ANDing them with the pin
/// means, and when they do not include `Account` the fix is refused rather than guessed.
fn pin_to_account(
    mut st: Map<String, Value>,
    sid: &str,
    account: &str,
    label: &str,
) -> Result<(Map<String, Value>, Vec<String>), FixRefused> {
    let mut condition = match st.get("Condition") {
        Some(Value::Object(c)) => c.clone(),
        _ => Map::new(),
    };
    let mut notes = Vec::new();
    for (op, keys) in &condition {
        let Value::Object(keys) = keys else { continue };
        for (key, values) in keys {
            if !key.eq_ignore_ascii_case(PRINCIPAL_TYPE) || op.eq_ignore_ascii_case(PIN_OPERATOR) {
                continue;
            }
            let entry = json!({ op.as_str(): { key.as_str(): values } });
            let admits_account = parse_block(&entry).is_some_and(|entries| {
                admitted_principal_types(&entries, account).contains(&PrincipalType::Account)
            });
            notes.push(if admits_account {
                format!("{label}: kept its condition {op} {key} = {values}; with the pin it admits only the account itself")
            } else {
                format!("{label}: kept its condition {op} {key} = {values}, which excludes the account itself, so the statement now grants nothing; Keyward never drops a condition, so review this statement")
            });
        }
    }
    let op = condition
        .keys()
        .find(|k| k.eq_ignore_ascii_case(PIN_OPERATOR))
        .cloned()
        .unwrap_or_else(|| PIN_OPERATOR.to_string());
    match condition.get_mut(&op) {
        Some(Value::Object(keys)) => {
            let existing = keys
                .keys()
                .find(|k| k.eq_ignore_ascii_case(PRINCIPAL_TYPE))
                .cloned();
            match existing {
                Some(key) => {
                    let values = &keys[&key];
                    let listed = match values {
                        Value::Array(items) => items.iter().any(|v| v == "Account"),
                        one => one == "Account",
                    };
                    if !listed {
                        return Err(refuse(format!(
                            "{label}: its condition {op} {key} = {values} does not admit the account itself, so pinning it to Account would leave a statement that grants nothing; edit this statement by hand"
                        )));
                    }
                    if values != "Account" {
                        notes.push(format!(
                            "{label}: narrowed its condition {op} {key} from {values} to \"Account\""
                        ));
                    }
                    keys.insert(key, json!("Account"));
                }
                None => {
                    keys.insert(PRINCIPAL_TYPE.into(), json!("Account"));
                }
            }
        }
        _ => {
            condition.insert(op, json!({ PRINCIPAL_TYPE: "Account" }));
        }
    }
    st.insert("Condition".into(), Value::Object(condition));
    Ok((with_sid_first(st, sid), notes))
}

/// Puts `Sid` first, where people look for it; the other fields keep their order.
fn with_sid_first(st: Map<String, Value>, sid: &str) -> Map<String, Value> {
    let mut out = Map::with_capacity(st.len() + 1);
    out.insert("Sid".into(), Value::String(sid.to_string()));
    for (k, v) in st {
        if k != "Sid" {
            out.insert(k, v);
        }
    }
    out
}

/// `base`, or `base` with a number, not used by any other statement. `own` is the Sid the
/// statement being renamed already has, which it may keep.
fn unique_sid(base: &str, taken: &mut Vec<String>, own: Option<&str>) -> String {
    let mut candidate = base.to_string();
    let mut n = 2;
    while taken.contains(&candidate) && own != Some(candidate.as_str()) {
        candidate = format!("{base}{n}");
        n += 1;
    }
    if let Some(own) = own
        && own != candidate
        && let Some(pos) = taken.iter().position(|t| t == own)
    {
        taken.remove(pos);
    }
    if !taken.contains(&candidate) {
        taken.push(candidate.clone());
    }
    candidate
}

fn named_statement(sid: &str, principals: &[String], actions: &[&str]) -> Value {
    json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": { "AWS": one_or_many(principals) },
        "Action": actions,
        "Resource": "*",
    })
}

/// True when unconditioned Allow statements naming `principal` itself grant every action.
/// Conditions are not evaluated here, so a conditioned grant does not count: the fix then adds
/// its own statement rather than bet access on a condition.
fn explicitly_allowed(policy: &Policy, principal: &str, actions: &[&str]) -> bool {
    actions.iter().all(|action| {
        policy.statements().iter().any(|st| {
            st.is_effective_allow()
                && st.conditions.is_empty()
                && !st.principals.negated
                && st.principals.aws().any(|p| p == principal)
                && st.actions.grants(action)
        })
    })
}

/// True when some statement lets the account's root user in (the pinned root statement does).
fn root_has_access(policy: &Policy, account: &str) -> bool {
    use super::condition::{PrincipalType, admitted_principal_types};
    policy.statements().iter().any(|st| {
        st.is_effective_allow()
            && super::rules::names_account_principal(st, account)
            && admitted_principal_types(&st.conditions, account).contains(&PrincipalType::Account)
    })
}

/// The checks DESIGN.md requires before a fixed policy may leave the engine.
fn check_safety(
    before: &Policy,
    after: &Policy,
    account: &str,
    auditor: Option<&str>,
    caller: Option<&str>,
) -> Result<(), FixRefused> {
    if let Some(st) = after
        .statements()
        .iter()
        .find(|st| delegation_of(st, account))
    {
        return Err(refuse(format!(
            "internal check failed: {} still delegates to IAM after the fix",
            st.label()
        )));
    }
    if super::rules::administrators(after, account).is_empty() {
        return Err(refuse_as(
            RefusalKind::NoAdministrator,
            format!(
                "the fixed policy would leave no IAM role or user of account {account} with kms:PutKeyPolicy"
            ),
        ));
    }
    if root_has_access(before, account) && !root_has_access(after, account) {
        return Err(refuse(
            "internal check failed: the account root would lose access",
        ));
    }
    if let Some(auditor) = auditor
        && !is_account_principal(auditor, account)
        && !explicitly_allowed(after, auditor, &AUDITOR_ACTIONS)
    {
        return Err(refuse_as(
            RefusalKind::Auditor,
            format!("the auditor {auditor} would lose read access"),
        ));
    }
    if let Some(caller) = caller
        && !is_account_principal(caller, account)
        && !explicitly_allowed(after, caller, &["kms:PutKeyPolicy"])
    {
        return Err(refuse_as(
            RefusalKind::Caller,
            format!(
                "{caller} would lose kms:PutKeyPolicy; AWS refuses a policy that locks its caller out"
            ),
        ));
    }
    Ok(())
}

/// Keyward's own lockout pre-check before PutKeyPolicy (AWS applies the same check, emulators
/// do not): `caller` (an IAM role or user ARN) must still be able to call `kms:PutKeyPolicy`
/// under `policy`, either named in an unconditioned Allow or through IAM delegation (an Allow
/// for the account root without the `aws:PrincipalType` pin, so IAM policies decide).
pub fn check_caller_keeps_access(
    policy: &Policy,
    account: &str,
    caller: &str,
) -> Result<(), FixRefused> {
    let caller = session_to_role_arn(caller);
    if is_account_principal(&caller, account)
        || explicitly_allowed(policy, &caller, &["kms:PutKeyPolicy"])
    {
        return Ok(());
    }
    let delegated = policy
        .statements()
        .iter()
        .any(|st| delegation_of(st, account) && st.actions.grants("kms:PutKeyPolicy"));
    if delegated && is_iam_identity_of(&caller, account) {
        return Ok(());
    }
    Err(refuse_as(
        RefusalKind::Caller,
        format!(
            "{caller} would lose kms:PutKeyPolicy; AWS refuses a policy that locks its caller out, so Keyward refuses it first (name the role in the policy or configure [[accounts]] remediator)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::{EvalContext, KeyManager, RuleId, evaluate_policy};

    const ACCOUNT: &str = "111122223333";
    const ROOT: &str = "arn:aws:iam::111122223333:root";
    const ADMIN: &str = "arn:aws:iam::111122223333:role/KMSAdmin";

    fn admins() -> Vec<String> {
        vec![ADMIN.to_string()]
    }

    fn run(
        text: &str,
        admins: &[String],
        auditor: Option<&str>,
        caller: Option<&str>,
    ) -> Result<FixOutcome, FixRefused> {
        let policy = Policy::parse(text).expect("test policy parses");
        fix(
            &policy,
            &FixContext {
                account_id: ACCOUNT,
                key_admins: admins,
                auditor,
                caller,
            },
        )
    }

    fn fixed(text: &str, admins: &[String], auditor: Option<&str>, caller: Option<&str>) -> Fixed {
        match run(text, admins, auditor, caller) {
            Ok(FixOutcome::Fixed(f)) => f,
            other => panic!("expected a fix for {text}, got {other:?}"),
        }
    }

    fn rule_ids(p: &Policy) -> Vec<RuleId> {
        evaluate_policy(
            p,
            &EvalContext {
                account_id: ACCOUNT,
                key_manager: KeyManager::Customer,
                trusted_accounts: &[],
            },
        )
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
    }

    const ADMIN_STATEMENT: &str = r#"{"Sid":"Allow access for Key Administrators","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion","kms:CancelKeyDeletion"],"Resource":"*"}"#;

    /// The Knowledge Center's starting point: the default root statement plus key administrators.
    fn seed() -> String {
        format!(
            r#"{{"Id":"key-consolepolicy","Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*"}},{ADMIN_STATEMENT}]}}"#
        )
    }

    #[test]
    fn seed_example_matches_the_knowledge_center_result() {
        let out = fixed(&seed(), &[], None, None);
        let want: Value = serde_json::from_str(&format!(
            r#"{{"Id":"key-consolepolicy","Version":"2012-10-17","Statement":[{{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}},{ADMIN_STATEMENT}]}}"#
        ))
        .unwrap();
        assert_eq!(out.policy.to_value(), want);
        assert_eq!(serde_json::from_str::<Value>(&out.text).unwrap(), want);
        assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
        assert!(!rule_ids(&out.policy).contains(&RuleId::Delegation));
        assert!(!rule_ids(&out.policy).contains(&RuleId::NoAdmin));
        // the text keeps the document's field order
        assert!(out.text.find("\"Id\"").unwrap() < out.text.find("\"Statement\"").unwrap());
    }

    #[test]
    fn default_policy_without_admins_is_refused_unless_admins_are_configured() {
        let default = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
        let err = run(default, &[], None, None).unwrap_err();
        assert!(err.reason.contains("key_admins"), "{err}");
        let out = fixed(default, &admins(), None, None);
        let statements = out.policy.statements();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].sid.as_deref(), Some(ROOT_SID));
        assert_eq!(statements[1].sid.as_deref(), Some(ADMIN_SID));
        assert!(statements[1].actions.grants("kms:PutKeyPolicy"));
        assert!(!statements[1].actions.grants("kms:Decrypt"));
        assert_eq!(rule_ids(&out.policy), Vec::<RuleId>::new());
    }

    #[test]
    fn nothing_to_fix_is_unchanged() {
        let text =
            serde_json::to_string(&fixed(&seed(), &[], None, None).policy.to_value()).unwrap();
        assert_eq!(run(&text, &admins(), None, None), Ok(FixOutcome::Unchanged));
        // no root statement at all, and an administrator: nothing to do
        let no_root = format!(r#"{{"Statement":[{ADMIN_STATEMENT}]}}"#);
        assert_eq!(run(&no_root, &[], None, None), Ok(FixOutcome::Unchanged));
    }

    #[test]
    fn conditions_are_merged_never_dropped() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"},"Bool":{"aws:SecureTransport":"true"},"StringLike":{"aws:PrincipalType":"*"}}}]}"#;
        let out = fixed(text, &admins(), None, None);
        let cond = out.policy.statements()[0].raw()["Condition"].clone();
        assert_eq!(
            cond,
            serde_json::json!({"StringEquals":{"kms:CallerAccount":"111122223333","aws:PrincipalType":"Account"},"Bool":{"aws:SecureTransport":"true"},"StringLike":{"aws:PrincipalType":"*"}})
        );
        assert!(
            out.changes
                .iter()
                .any(|c| c.contains("kept its condition StringLike aws:PrincipalType")),
            "{:?}",
            out.changes
        );
        // the bare-account principal form is kept as written
        assert_eq!(
            out.policy.statements()[0].raw()["Principal"],
            serde_json::json!({"AWS":"111122223333"})
        );
    }

    #[test]
    fn principal_type_entries_under_the_pin_operator_are_narrowed_to_account() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:principaltype":["Account","AssumedRole"]}}}]}"#;
        let out = fixed(text, &admins(), None, None);
        assert_eq!(
            out.policy.statements()[0].raw()["Condition"],
            serde_json::json!({"StringEquals":{"aws:principaltype":"Account"}})
        );
        assert!(
            out.changes.iter().any(|c| c.contains("narrowed")),
            "{:?}",
            out.changes
        );
    }

    #[test]
    fn a_pin_operator_entry_without_account_is_refused_not_rewritten() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":["User","AssumedRole"]}}}]}"#;
        let err = run(text, &admins(), None, None).unwrap_err();
        assert!(
            err.reason.contains("does not admit the account itself"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_that_excludes_the_account_is_kept_and_reported() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"aws:PrincipalType":"Account"}}}]}"#;
        let out = fixed(text, &admins(), None, None);
        assert_eq!(
            out.policy.statements()[0].raw()["Condition"],
            serde_json::json!({"StringNotEquals":{"aws:PrincipalType":"Account"},"StringEquals":{"aws:PrincipalType":"Account"}})
        );
        assert!(
            out.changes.iter().any(|c| c.contains("grants nothing")),
            "{:?}",
            out.changes
        );
    }

    /// The safety net behind `fix`: each check refuses a crafted "after" policy on its own,
    /// since a correct rewrite never reaches them.
    #[test]
    fn safety_checks_each_refuse_what_they_guard() {
        let parse = |text: String| Policy::parse(&text).unwrap();
        let admin = format!(
            r#"{{"Sid":"Admin","Effect":"Allow","Principal":{{"AWS":"{ADMIN}"}},"Action":"kms:*","Resource":"*"}}"#
        );
        let pinned = format!(
            r#"{{"Sid":"{ROOT_SID}","Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}}"#
        );
        let delegating = format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*","Resource":"*"}}"#
        );
        let before = parse(format!(r#"{{"Statement":[{delegating},{admin}]}}"#));
        let safe = parse(format!(r#"{{"Statement":[{pinned},{admin}]}}"#));
        assert_eq!(check_safety(&before, &safe, ACCOUNT, None, None), Ok(()));

        let still = check_safety(&before, &before, ACCOUNT, None, None).unwrap_err();
        assert!(still.reason.contains("still delegates"), "{still}");

        let no_admin = parse(format!(r#"{{"Statement":[{pinned}]}}"#));
        let err = check_safety(&before, &no_admin, ACCOUNT, None, None).unwrap_err();
        assert!(err.reason.contains("no IAM role or user"), "{err}");

        let rootless = parse(format!(r#"{{"Statement":[{admin}]}}"#));
        let err = check_safety(&before, &rootless, ACCOUNT, None, None).unwrap_err();
        assert!(err.reason.contains("root would lose access"), "{err}");

        let auditor = "arn:aws:iam::111122223333:role/Auditor";
        let err = check_safety(&before, &safe, ACCOUNT, Some(auditor), None).unwrap_err();
        assert!(
            err.reason.contains("auditor") && err.reason.contains(auditor),
            "{err}"
        );

        let caller = "arn:aws:iam::111122223333:role/Keyward";
        let err = check_safety(&before, &safe, ACCOUNT, None, Some(caller)).unwrap_err();
        assert!(
            err.reason.contains("kms:PutKeyPolicy") && err.reason.contains(caller),
            "{err}"
        );

        // The account principal itself never needs a statement of its own.
        assert_eq!(
            check_safety(&before, &safe, ACCOUNT, Some(ROOT), Some(ROOT)),
            Ok(())
        );
    }

    #[test]
    fn mixed_principal_statement_is_split_so_others_keep_access() {
        let text = format!(
            r#"{{"Statement":[{{"Sid":"Shared","Effect":"Allow","Principal":{{"AWS":["{ROOT}","arn:aws:iam::111122223333:role/App"],"Service":"logs.amazonaws.com"}},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}},{ADMIN_STATEMENT}]}}"#
        );
        let out = fixed(&text, &[], None, None);
        let st = out.policy.statements();
        assert_eq!(st.len(), 3);
        assert_eq!(st[0].sid.as_deref(), Some(ROOT_SID));
        assert_eq!(st[0].raw()["Principal"], serde_json::json!({"AWS": ROOT}));
        assert_eq!(st[1].sid.as_deref(), Some("Shared"));
        assert_eq!(
            st[1].raw()["Principal"],
            serde_json::json!({"AWS":"arn:aws:iam::111122223333:role/App","Service":"logs.amazonaws.com"})
        );
        assert!(st[1].conditions.is_empty());
        assert_eq!(st[0].actions, st[1].actions);
    }

    #[test]
    fn every_delegating_statement_is_pinned_with_unique_sids() {
        let text = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*","Resource":"*"}},{{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:Decrypt","Resource":"*"}},{ADMIN_STATEMENT}]}}"#
        );
        let out = fixed(&text, &[], None, None);
        let sids: Vec<_> = out
            .policy
            .statements()
            .iter()
            .map(|s| s.sid.clone().unwrap_or_default())
            .collect();
        assert_eq!(sids[0], format!("{ROOT_SID}2"));
        assert_eq!(sids[1], ROOT_SID);
        assert!(!rule_ids(&out.policy).contains(&RuleId::Delegation));
    }

    #[test]
    fn auditor_and_caller_keep_access_as_roles_not_sessions() {
        let session = "arn:aws:sts::111122223333:assumed-role/Keyward/i-0abc";
        let out = fixed(
            &seed(),
            &[],
            Some("arn:aws:iam::111122223333:role/KeywardAudit"),
            Some(session),
        );
        let st = out.policy.statements();
        let auditor = st
            .iter()
            .find(|s| s.sid.as_deref() == Some(AUDITOR_SID))
            .expect("auditor statement");
        for a in AUDITOR_ACTIONS {
            assert!(auditor.actions.grants(a), "{a}");
        }
        let remediator = st
            .iter()
            .find(|s| s.sid.as_deref() == Some(REMEDIATOR_SID))
            .expect("remediator statement");
        assert_eq!(
            remediator.principals.aws().collect::<Vec<_>>(),
            vec!["arn:aws:iam::111122223333:role/Keyward"]
        );
        assert!(remediator.actions.grants("kms:PutKeyPolicy"));
        // named statements follow the root statement
        assert_eq!(st[0].sid.as_deref(), Some(ROOT_SID));
        assert_eq!(
            st.last().unwrap().sid.as_deref(),
            Some("Allow access for Key Administrators")
        );
        // an auditor that is already an administrator with Get*/Describe*/List* needs nothing new
        let out = fixed(&seed(), &[], Some(ADMIN), Some(ADMIN));
        assert_eq!(out.policy.statements().len(), 2);
    }

    #[test]
    fn conditioned_grants_do_not_count_for_the_caller() {
        let text = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*","Resource":"*"}},{{"Sid":"Admins","Effect":"Allow","Principal":{{"AWS":"{ADMIN}"}},"Action":"kms:*","Resource":"*","Condition":{{"Bool":{{"aws:MultiFactorAuthPresent":"true"}}}}}}]}}"#
        );
        let out = fixed(&text, &[], None, Some(ADMIN));
        assert!(
            out.policy
                .statements()
                .iter()
                .any(|s| s.sid.as_deref() == Some(REMEDIATOR_SID))
        );
    }

    #[test]
    fn refusals() {
        let err = |admins: &[String], account: &str| {
            let policy = Policy::parse(&seed()).unwrap();
            fix(
                &policy,
                &FixContext {
                    account_id: account,
                    key_admins: admins,
                    auditor: None,
                    caller: None,
                },
            )
            .unwrap_err()
        };
        assert!(err(&[], "1111").reason.contains("12-digit"));
        let foreign = vec!["arn:aws:iam::444455556666:role/KMSAdmin".to_string()];
        assert!(
            err(&foreign, ACCOUNT)
                .reason
                .contains("not an IAM role or user")
        );
        // over 32 KB: a long list of principals in an untouched statement
        let many: Vec<String> = (0..900)
            .map(|i| format!("\"arn:aws:iam::111122223333:role/application-role-{i:04}\""))
            .collect();
        let big = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*","Resource":"*"}},{ADMIN_STATEMENT},{{"Effect":"Allow","Principal":{{"AWS":[{}]}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
            many.join(",")
        );
        let e = run(&big, &[], None, None).unwrap_err();
        assert!(e.reason.contains("32768"), "{e}");
    }

    #[test]
    fn single_object_statement_becomes_an_array_when_split() {
        let text = format!(
            r#"{{"Statement":{{"Effect":"Allow","Principal":{{"AWS":["{ROOT}","{ADMIN}"]}},"Action":"kms:*","Resource":"*"}}}}"#
        );
        // split: two statements now, so an array
        let out = fixed(&text, &[], None, None);
        assert!(out.policy.raw()["Statement"].is_array());
        let text = format!(
            r#"{{"Statement":{{"Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}}}}"#
        );
        // pinned already, but no administrator: the fix cannot leave the key without one
        assert!(
            run(&text, &[], None, None)
                .unwrap_err()
                .reason
                .contains("key_admins")
        );
    }

    #[test]
    fn deny_and_ineffective_statements_are_left_alone() {
        let text = format!(
            r#"{{"Statement":[{{"Effect":"Deny","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}},{{"Effect":"Allow","Principal":{{"AWS":"{ROOT}"}},"Action":"kms:*"}},{ADMIN_STATEMENT}]}}"#
        );
        assert_eq!(run(&text, &[], None, None), Ok(FixOutcome::Unchanged));
    }
    #[test]
    fn a_proposal_that_locks_out_the_applier_is_refused() {
        let caller = "arn:aws:sts::111122223333:assumed-role/Keyward/session-1";
        // Root pinned to the account, only KMSAdmin named: Keyward's role is locked out.
        let locked = Policy::parse(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{ROOT_SID}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}},{ADMIN_STATEMENT}]}}"#
        ))
        .expect("policy");
        let err = check_caller_keeps_access(&locked, "111122223333", caller).expect_err("refused");
        assert!(
            err.reason
                .contains("arn:aws:iam::111122223333:role/Keyward"),
            "{err}"
        );
        assert!(err.reason.contains("kms:PutKeyPolicy"), "{err}");
        // Delegating to IAM keeps the caller in (IAM decides); naming the role does too.
        let original = Policy::parse(&seed()).expect("seed");
        check_caller_keeps_access(&original, "111122223333", caller).expect("delegated");
        let fixed = fixed(&seed(), &[], None, Some(caller));
        check_caller_keeps_access(&fixed.policy, "111122223333", caller).expect("named");
        // And the fix never proposes a policy that fails the pre-check.
        let unnamed = fixed_without_caller();
        assert!(check_caller_keeps_access(&unnamed, "111122223333", caller).is_err());
    }

    fn fixed_without_caller() -> Policy {
        fixed(&seed(), &[], None, None).policy
    }
}
