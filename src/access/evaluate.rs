//! Effective access to one key: key-policy statements, IAM identity policies through
//! delegation (minus Denies, within boundaries) and grants, combined per principal and action.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::catalogue::{ActionMask, KMS_KEY_ACTIONS, grant_operation};
use super::conditions::{CallerFacts, Decision, decide};
use super::index::{AccessIndex, Boundary, Identity, IdentityKind};
use super::table::{
    AccessLevel, AccessTable, ActionAccess, PrincipalAccess, PrincipalType, Reason, StatementRef,
};
use crate::policy::document::{Effect, InvalidPolicy, Policy, PrincipalKind, Statement};
use crate::policy::matching::{
    Arn, glob_match, is_account_id, is_public_aws_principal, is_root_arn_of, session_to_role_arn,
};
use crate::policy::rules::delegation_of;

/// A grant on the key, as ListGrants reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInput {
    pub grant_id: String,
    pub grantee_principal: Option<String>,
    /// Grant operations (`Decrypt`, `GenerateDataKey`, …); a `kms:` prefix is accepted too.
    pub operations: Vec<String>,
}

/// The key policy, as text or already parsed.
#[derive(Debug, Clone, Copy)]
pub enum KeyPolicyInput<'a> {
    Text(&'a str),
    Parsed(&'a Policy),
}

/// Everything the evaluation of one key reads.
#[derive(Debug, Clone, Copy)]
pub struct AccessInput<'a> {
    pub key_arn: &'a str,
    /// The account that owns the key.
    pub account_id: &'a str,
    pub key_policy: KeyPolicyInput<'a>,
    /// The compiled IAM inventory of the key's account; `None` when it has not been synced.
    pub index: Option<&'a AccessIndex>,
    pub grants: &'a [GrantInput],
}

/// Why access could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The key policy is not a valid policy (KMS-INVALID): nobody's access can be read from it.
    #[error("the key policy is not valid: {0}")]
    InvalidKeyPolicy(#[from] InvalidPolicy),
}

/// Who can use or manage the key, and why: one entry per IAM user and role of the key's account
/// (when the inventory is known), per principal named in the key policy, and per grantee.
pub fn evaluate_access(input: &AccessInput<'_>) -> Result<AccessTable, AccessError> {
    let owned;
    let policy = match input.key_policy {
        KeyPolicyInput::Parsed(p) => p,
        KeyPolicyInput::Text(text) => {
            owned = Policy::parse(text)?;
            &owned
        }
    };
    let ctx = KeyContext::new(input, policy);
    let mut notes = ctx.notes.clone();
    let mut principals: BTreeMap<String, PrincipalType> = BTreeMap::new();
    if let Some(index) = ctx.index {
        for id in &index.identities {
            let ty = match id.kind {
                IdentityKind::User => PrincipalType::User,
                IdentityKind::Role => PrincipalType::Role,
            };
            principals.insert(id.arn.clone(), ty);
        }
    } else {
        notes.push(format!(
            "The IAM inventory of account {} is not known: IAM users and roles are not listed and what IAM policies grant is unknown.",
            input.account_id
        ));
    }
    for st in policy.statements() {
        if st.principals.wildcard {
            if !st.principals.negated {
                principals.insert("*".into(), PrincipalType::Anyone);
            }
        } else if !st.principals.negated {
            for e in &st.principals.entries {
                let (name, ty) = ctx.named(e.kind, &e.value);
                principals.entry(name).or_insert(ty);
            }
        }
        // Allow + NotPrincipal admits everyone not listed.
        if st.principals.negated && st.effect == Effect::Allow {
            principals.insert("*".into(), PrincipalType::Anyone);
        }
    }
    for g in &ctx.grants {
        if let Some(grantee) = &g.grantee {
            principals
                .entry(grantee.clone())
                .or_insert_with(|| classify(grantee));
        }
    }
    let principals = principals
        .into_iter()
        .map(|(principal, ty)| {
            let caller = ctx.caller(&principal, ty);
            let actions = ctx.evaluate(&caller);
            let notes = match (ty, caller.identity) {
                (PrincipalType::User | PrincipalType::Role, Some(id)) => id.notes.clone(),
                _ => Vec::new(),
            };
            PrincipalAccess {
                principal,
                principal_type: ty,
                actions,
                notes,
            }
        })
        .collect();
    Ok(AccessTable {
        key_arn: input.key_arn.to_string(),
        account_id: input.account_id.to_string(),
        delegates_to_iam: ctx.delegates,
        delegation_statements: ctx
            .statements
            .iter()
            .filter(|s| s.delegates)
            .map(|s| StatementRef {
                statement_index: s.st.index,
                sid: s.st.sid.clone(),
            })
            .collect(),
        identities_known: ctx.index.is_some(),
        principals,
        notes,
    })
}

/// What one principal can do with a key that may not list it (the reverse view): the same
/// evaluation as its row in [`evaluate_access`]'s table.
pub(crate) fn evaluate_principal(
    input: &AccessInput<'_>,
    principal: &str,
) -> Result<Vec<ActionAccess>, AccessError> {
    let owned;
    let policy = match input.key_policy {
        KeyPolicyInput::Parsed(p) => p,
        KeyPolicyInput::Text(text) => {
            owned = Policy::parse(text)?;
            &owned
        }
    };
    let ctx = KeyContext::new(input, policy);
    let ty = match ctx.index.and_then(|i| i.identity(principal)) {
        Some(id) if id.arn == principal => match id.kind {
            IdentityKind::User => PrincipalType::User,
            IdentityKind::Role => PrincipalType::Role,
        },
        _ => classify(&ctx.normalise_aws(principal)),
    };
    let name = if ty == PrincipalType::Account {
        ctx.normalise_aws(principal)
    } else {
        principal.to_string()
    };
    Ok(ctx.evaluate(&ctx.caller(&name, ty)))
}

/// The type of a principal string as it appears in a table (account ids already as root ARNs).
pub(crate) fn classify(value: &str) -> PrincipalType {
    if is_public_aws_principal(value) {
        return PrincipalType::Anyone;
    }
    if let Some(arn) = Arn::parse(value) {
        return match (arn.service, arn.resource) {
            ("iam", "root") => PrincipalType::Account,
            ("iam", r) if r.starts_with("user/") => PrincipalType::User,
            ("iam", r) if r.starts_with("role/") => PrincipalType::Role,
            ("sts", r) if r.starts_with("assumed-role/") => PrincipalType::AssumedRole,
            ("sts", r) if r.starts_with("federated-user/") => PrincipalType::Federated,
            _ => PrincipalType::Other,
        };
    }
    if value.ends_with(".amazonaws.com") || value.ends_with(".amazonaws.com.cn") {
        PrincipalType::Service
    } else {
        PrincipalType::Other
    }
}

/// A key-policy statement that has an effect on this key.
struct KeyStatement<'a> {
    st: &'a Statement,
    allow: bool,
    actions: ActionMask,
    delegates: bool,
}

impl KeyStatement<'_> {
    fn condition(&self) -> Option<Value> {
        self.st.raw().get("Condition").cloned()
    }
}

struct CompiledGrant<'a> {
    id: &'a str,
    grantee: Option<String>,
    actions: ActionMask,
}

/// One key, compiled for evaluating any number of principals.
struct KeyContext<'a> {
    partition: &'a str,
    statements: Vec<KeyStatement<'a>>,
    grants: Vec<CompiledGrant<'a>>,
    /// The index, when it is the key's account's.
    index: Option<&'a AccessIndex>,
    /// Per statement of the index: whether its resources cover this key.
    covers: Vec<bool>,
    delegates: bool,
    notes: Vec<String>,
}

/// A principal being evaluated.
struct Caller<'a> {
    arn: &'a str,
    ty: PrincipalType,
    facts: CallerFacts<'a>,
    /// Its user or role (a session's role), whose identity policies and boundary apply.
    identity: Option<&'a Identity>,
}

/// The paths that grant one action, while they are being gathered.
#[derive(Default)]
struct Gathered {
    reasons: Vec<Reason>,
    /// Some path has no open condition.
    certain: bool,
    /// Some path exists.
    any: bool,
}

/// What the boundary says about one action.
enum BoundaryVerdict {
    NotSet,
    Blocks,
    Allows { certain: bool, reasons: Vec<Reason> },
}

impl<'a> KeyContext<'a> {
    fn new(input: &AccessInput<'a>, policy: &'a Policy) -> Self {
        let mut notes = Vec::new();
        let key_arn = input.key_arn;
        let partition = Arn::parse(key_arn).map_or("aws", |a| a.partition);
        let statements: Vec<KeyStatement<'a>> = policy
            .statements()
            .iter()
            .filter(|st| {
                st.resources.as_ref().is_some_and(|r| {
                    let any = r
                        .patterns
                        .iter()
                        .any(|p| p == "*" || glob_match(p, key_arn, false));
                    any != r.negated
                })
            })
            .map(|st| KeyStatement {
                st,
                allow: st.effect == Effect::Allow,
                actions: ActionMask::granted_by(&st.actions.patterns, st.actions.negated),
                delegates: delegation_of(st, input.account_id),
            })
            .filter(|s| !s.actions.is_empty())
            .collect();
        let delegates = statements.iter().any(|s| s.delegates);
        let index = match input.index {
            Some(i) if i.account_id == input.account_id => Some(i),
            Some(i) => {
                notes.push(format!(
                    "The IAM inventory given is for account {}, not the key's account {}: it was not used.",
                    i.account_id, input.account_id
                ));
                None
            }
            None => None,
        };
        let covers = index.map_or_else(Vec::new, |i| {
            i.statements.iter().map(|s| s.covers_key(key_arn)).collect()
        });
        let mut grants = Vec::new();
        for g in input.grants {
            let mut actions = ActionMask::EMPTY;
            for op in &g.operations {
                match grant_operation(op) {
                    Some(a) => actions = actions.union(ActionMask::of_action(a)),
                    None => notes.push(format!(
                        "Grant {} lists the operation {op:?}, which is not a key action: ignored.",
                        g.grant_id
                    )),
                }
            }
            if g.grantee_principal.is_none() {
                notes.push(format!(
                    "Grant {} has no grantee principal: nobody is listed for it.",
                    g.grant_id
                ));
            }
            grants.push(CompiledGrant {
                id: &g.grant_id,
                grantee: g
                    .grantee_principal
                    .as_deref()
                    .map(|p| normalise_aws(p, partition)),
                actions,
            });
        }
        KeyContext {
            partition,
            statements,
            grants,
            index,
            covers,
            delegates,
            notes,
        }
    }

    fn normalise_aws(&self, value: &str) -> String {
        normalise_aws(value, self.partition)
    }

    /// The table name and type of a principal entry of the key policy.
    fn named(&self, kind: PrincipalKind, value: &str) -> (String, PrincipalType) {
        match kind {
            PrincipalKind::Aws => {
                let name = self.normalise_aws(value);
                let ty = classify(&name);
                (name, ty)
            }
            PrincipalKind::Service => (value.to_string(), PrincipalType::Service),
            PrincipalKind::Federated => (value.to_string(), PrincipalType::Federated),
            PrincipalKind::CanonicalUser => (value.to_string(), PrincipalType::Other),
        }
    }

    fn caller<'c>(&'c self, arn: &'c str, ty: PrincipalType) -> Caller<'c> {
        let identity = match ty {
            PrincipalType::User | PrincipalType::Role | PrincipalType::AssumedRole => {
                self.index.and_then(|i| i.identity(arn))
            }
            _ => None,
        };
        let account = match ty {
            PrincipalType::Account
            | PrincipalType::User
            | PrincipalType::Role
            | PrincipalType::AssumedRole => Arn::parse(arn).map(|a| a.account),
            _ => None,
        };
        let facts = match ty {
            PrincipalType::Account => CallerFacts {
                principal_type: Some("Account"),
                account,
                principal_arn: Some(arn),
            },
            PrincipalType::User => CallerFacts {
                principal_type: Some("User"),
                account,
                principal_arn: Some(arn),
            },
            PrincipalType::Role => CallerFacts {
                // A role acts only through sessions.
                principal_type: Some("AssumedRole"),
                account,
                principal_arn: Some(arn),
            },
            PrincipalType::AssumedRole => CallerFacts {
                principal_type: Some("AssumedRole"),
                account,
                // STS drops the role's path: only the inventory knows the exact role ARN.
                principal_arn: identity.map(|i| i.arn.as_str()),
            },
            _ => CallerFacts::default(),
        };
        Caller {
            arn,
            ty,
            facts,
            identity,
        }
    }

    /// True when a key-policy statement's principal block covers the caller. Denies also cover
    /// the principals of a named account and the sessions of a named role, because a Deny
    /// restricts whoever the named principal stands for.
    fn covers_caller(&self, st: &Statement, caller: &Caller<'_>, deny: bool) -> bool {
        let matches_entry = |kind: PrincipalKind, value: &str, generous: bool| -> bool {
            match kind {
                PrincipalKind::Aws => {
                    if is_public_aws_principal(value) {
                        return true;
                    }
                    let value = self.normalise_aws(value);
                    if value == caller.arn {
                        return true;
                    }
                    if !generous {
                        return false;
                    }
                    let account = caller.facts.account.unwrap_or("");
                    (!account.is_empty() && is_root_arn_of(&value, account))
                        || (caller.ty == PrincipalType::AssumedRole
                            && (caller.identity.is_some_and(|i| i.arn == value)
                                || session_to_role_arn(caller.arn) == value))
                }
                PrincipalKind::Service => {
                    caller.ty == PrincipalType::Service && value == caller.arn
                }
                PrincipalKind::Federated => {
                    caller.ty == PrincipalType::Federated && value == caller.arn
                }
                PrincipalKind::CanonicalUser => {
                    caller.ty == PrincipalType::Other && value == caller.arn
                }
            }
        };
        if st.principals.negated {
            // NotPrincipal: everyone except the listed, read generously (whoever a listed
            // principal stands for is excluded) so that a guardrail is never over-applied.
            let excluded = st
                .principals
                .entries
                .iter()
                .any(|e| matches_entry(e.kind, &e.value, true));
            return !excluded;
        }
        st.principals.wildcard
            || st
                .principals
                .entries
                .iter()
                .any(|e| matches_entry(e.kind, &e.value, deny))
    }

    /// True when the statement names the caller itself (not through `*`).
    fn names_explicitly(&self, st: &Statement, caller: &Caller<'_>) -> bool {
        !st.principals.negated
            && st
                .principals
                .aws()
                .any(|v| !is_public_aws_principal(v) && self.normalise_aws(v) == caller.arn)
    }

    fn evaluate(&self, caller: &Caller<'_>) -> Vec<ActionAccess> {
        // Key-policy Allows and Denies that reach the caller.
        let mut direct = Vec::new();
        let mut denies = Vec::new();
        for ks in &self.statements {
            if !self.covers_caller(ks.st, caller, !ks.allow) {
                continue;
            }
            let decision = decide(&ks.st.conditions, &caller.facts);
            if decision == Decision::Fails {
                continue;
            }
            let reason = Reason::KeyPolicy {
                statement_index: ks.st.index,
                sid: ks.st.sid.clone(),
                condition: (decision == Decision::Open)
                    .then(|| ks.condition())
                    .flatten(),
            };
            if ks.allow {
                direct.push((ks, decision, reason));
            } else {
                denies.push((ks.actions, decision, reason));
            }
        }
        let grants: Vec<&CompiledGrant<'_>> = self
            .grants
            .iter()
            .filter(|g| g.grantee.as_deref() == Some(caller.arn))
            .collect();

        // Identity policies: Denies always apply (an explicit Deny anywhere wins); Allows only
        // through delegation, and only for the user or role itself.
        let mut delegation = Vec::new();
        let mut identity_allows = Vec::new();
        let mut boundary_allows = Vec::new();
        if let Some(id) = caller.identity {
            let via_iam = self.delegates
                && matches!(caller.ty, PrincipalType::User | PrincipalType::Role)
                && id.arn == caller.arn
                && !id.allow_actions.is_empty();
            if via_iam {
                for ks in self.statements.iter().filter(|s| s.delegates) {
                    let decision = decide(&ks.st.conditions, &caller.facts);
                    if decision != Decision::Fails {
                        delegation.push((
                            ks.actions,
                            decision,
                            Reason::Delegation {
                                statement_index: ks.st.index,
                                sid: ks.st.sid.clone(),
                                condition: (decision == Decision::Open)
                                    .then(|| ks.condition())
                                    .flatten(),
                            },
                        ));
                    }
                }
            }
            let index = self.index.expect("an identity comes from the index");
            for source in &id.sources {
                for i in source.statements.clone() {
                    let st = &index.statements[i];
                    if !self.covers[i] || (st.allow && !via_iam) {
                        continue;
                    }
                    let decision = decide(&st.conditions, &caller.facts);
                    if decision == Decision::Fails {
                        continue;
                    }
                    let reason = Reason::IdentityPolicy {
                        policy: source.policy.clone(),
                        via: source.via.clone(),
                        statement_index: st.index,
                        sid: st.sid.clone(),
                        condition: if decision == Decision::Open {
                            st.condition_json.clone()
                        } else {
                            None
                        },
                    };
                    if st.allow {
                        identity_allows.push((st.actions, decision, reason));
                    } else {
                        denies.push((st.actions, decision, reason));
                    }
                }
            }
            if let Boundary::Policy { policy, statements } = &id.boundary {
                for i in statements.clone() {
                    let st = &index.statements[i];
                    if !self.covers[i] {
                        continue;
                    }
                    let decision = decide(&st.conditions, &caller.facts);
                    if decision == Decision::Fails {
                        continue;
                    }
                    let reason = Reason::Boundary {
                        policy: policy.clone(),
                        statement_index: Some(st.index),
                        sid: st.sid.clone(),
                        condition: if decision == Decision::Open {
                            st.condition_json.clone()
                        } else {
                            None
                        },
                    };
                    if st.allow {
                        boundary_allows.push((st.actions, decision, reason));
                    } else {
                        denies.push((st.actions, decision, reason));
                    }
                }
            }
        }

        let union = |list: &[(ActionMask, Decision, Reason)]| {
            list.iter()
                .fold(ActionMask::EMPTY, |m, (a, _, _)| m.union(*a))
        };
        let direct_mask = direct
            .iter()
            .fold(ActionMask::EMPTY, |m, (ks, _, _)| m.union(ks.actions));
        let grant_mask = grants
            .iter()
            .fold(ActionMask::EMPTY, |m, g| m.union(g.actions));
        let iam_mask = union(&delegation).intersect(union(&identity_allows));
        let candidates = direct_mask.union(grant_mask).union(iam_mask);
        if candidates.is_empty() {
            return Vec::new();
        }

        let boundary_for = |action: ActionMask| -> BoundaryVerdict {
            match caller.identity.map(|i| &i.boundary) {
                None | Some(Boundary::None) => BoundaryVerdict::NotSet,
                Some(Boundary::Unknown(policy)) => BoundaryVerdict::Allows {
                    certain: false,
                    reasons: vec![Reason::Boundary {
                        policy: policy.clone(),
                        statement_index: None,
                        sid: None,
                        condition: None,
                    }],
                },
                Some(Boundary::Policy { .. }) => {
                    let hits: Vec<_> = boundary_allows
                        .iter()
                        .filter(|(a, _, _)| a.contains(action))
                        .collect();
                    if hits.is_empty() {
                        BoundaryVerdict::Blocks
                    } else {
                        BoundaryVerdict::Allows {
                            certain: hits.iter().any(|(_, d, _)| *d == Decision::Holds),
                            reasons: hits.into_iter().map(|(_, _, r)| r.clone()).collect(),
                        }
                    }
                }
            }
        };

        let mut out = Vec::new();
        for i in candidates.indexes() {
            let action = ActionMask(1 << i);
            let applicable_denies: Vec<_> = denies
                .iter()
                .filter(|(a, _, _)| a.contains(action))
                .collect();
            if applicable_denies
                .iter()
                .any(|(_, d, _)| *d == Decision::Holds)
            {
                continue;
            }
            let boundary = boundary_for(action);
            let mut g = Gathered::default();
            for (ks, decision, reason) in &direct {
                if !ks.actions.contains(action) {
                    continue;
                }
                // A key policy naming a role ARN is still limited by the role's boundary; one
                // naming a user or a session is not (IAM policy evaluation logic, same account).
                let mut certain = *decision == Decision::Holds;
                let mut reasons = vec![reason.clone()];
                if caller.ty == PrincipalType::Role && self.names_explicitly(ks.st, caller) {
                    match &boundary {
                        BoundaryVerdict::Blocks => continue,
                        BoundaryVerdict::Allows {
                            certain: c,
                            reasons: r,
                        } => {
                            certain &= c;
                            reasons.extend(r.iter().cloned());
                        }
                        BoundaryVerdict::NotSet => {}
                    }
                }
                g.add(reasons, certain);
            }
            for grant in &grants {
                if grant.actions.contains(action) {
                    g.add(
                        vec![Reason::Grant {
                            grant_id: grant.id.to_string(),
                        }],
                        true,
                    );
                }
            }
            if iam_mask.contains(action) && !matches!(boundary, BoundaryVerdict::Blocks) {
                let mut reasons = Vec::new();
                let mut deleg_certain = false;
                for (a, d, r) in &delegation {
                    if a.contains(action) {
                        deleg_certain |= *d == Decision::Holds;
                        reasons.push(r.clone());
                    }
                }
                let mut id_certain = false;
                for (a, d, r) in &identity_allows {
                    if a.contains(action) {
                        id_certain |= *d == Decision::Holds;
                        reasons.push(r.clone());
                    }
                }
                let mut certain = deleg_certain && id_certain;
                if let BoundaryVerdict::Allows {
                    certain: c,
                    reasons: r,
                } = boundary
                {
                    certain &= c;
                    reasons.extend(r);
                }
                g.add(reasons, certain);
            }
            if !g.any {
                continue;
            }
            let open_denies: Vec<Reason> = applicable_denies
                .into_iter()
                .map(|(_, _, r)| r.clone())
                .collect();
            let (name, group) = KMS_KEY_ACTIONS[i];
            out.push(ActionAccess {
                action: name.to_string(),
                group,
                access: if g.certain && open_denies.is_empty() {
                    AccessLevel::Allowed
                } else {
                    AccessLevel::Conditional
                },
                reasons: g.reasons,
                denies: open_denies,
            });
        }
        out
    }
}

impl Gathered {
    fn add(&mut self, reasons: Vec<Reason>, certain: bool) {
        self.any = true;
        self.certain |= certain;
        for r in reasons {
            if !self.reasons.contains(&r) {
                self.reasons.push(r);
            }
        }
    }
}

/// Bare account ids become the account's root ARN, so each principal has one name.
fn normalise_aws(value: &str, partition: &str) -> String {
    if is_account_id(value) {
        format!("arn:{partition}:iam::{value}:root")
    } else {
        value.to_string()
    }
}
