//! Effective access to one key: key-policy statements, IAM identity policies through
//! delegation (minus Denies, within boundaries) and grants, combined per principal and action.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::catalogue::{ActionMask, KMS_KEY_ACTIONS, grant_operation};
use super::conditions::{CallerFacts, Decision, decide};
use super::identity::IdentityStatement;
use super::index::{AccessIndex, Boundary, Identity, IdentityKind, Source};
use super::table::{
    AccessLevel, AccessTable, ActionAccess, PrincipalAccess, PrincipalType, Reason, Reasons,
    StatementRef,
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
    if ctx.index.is_none() {
        notes.push(format!(
            "The IAM inventory of account {} is not known: IAM users and roles are not listed and what IAM policies grant is unknown.",
            input.account_id
        ));
    }
    // The principals the key policy and the grants name; the account's users and roles (sorted
    // in the index already) are merged in below rather than inserted one by one.
    let mut named: BTreeMap<String, PrincipalType> = BTreeMap::new();
    for st in policy.statements() {
        if st.principals.wildcard {
            if !st.principals.negated {
                named.insert("*".into(), PrincipalType::Anyone);
            }
        } else if !st.principals.negated {
            for e in &st.principals.entries {
                let (name, ty) = ctx.named(e.kind, &e.value);
                named.entry(name).or_insert(ty);
            }
        }
        // Allow + NotPrincipal admits everyone not listed.
        if st.principals.negated && st.effect == Effect::Allow {
            named.insert("*".into(), PrincipalType::Anyone);
        }
    }
    for g in &ctx.grants {
        if let Some(grantee) = &g.grantee {
            named
                .entry(grantee.clone())
                .or_insert_with(|| classify(grantee));
        }
    }
    let identities = ctx.index.map_or(&[][..], |i| i.identities.as_slice());
    let mut principals = Vec::with_capacity(identities.len() + named.len());
    let mut identities = identities.iter().peekable();
    let mut named = named.into_iter().peekable();
    loop {
        // An identity named in the key policy too is listed once, as the identity.
        let take_named = match (identities.peek(), named.peek()) {
            (None, None) => break,
            (Some(id), Some((name, _))) => match name.as_str().cmp(id.arn.as_str()) {
                Ordering::Less => true,
                Ordering::Equal => {
                    named.next();
                    false
                }
                Ordering::Greater => false,
            },
            (Some(_), None) => false,
            (None, Some(_)) => true,
        };
        let row = if take_named {
            let Some((principal, ty)) = named.next() else {
                break;
            };
            let caller = ctx.caller(&principal, ty);
            let notes = match (ty, caller.identity) {
                (PrincipalType::User | PrincipalType::Role, Some(id)) => id.notes.clone(),
                _ => Vec::new(),
            };
            let actions = ctx.evaluate(&caller);
            PrincipalAccess {
                principal,
                principal_type: ty,
                actions,
                notes,
            }
        } else {
            let Some(id) = identities.next() else {
                break;
            };
            let ty = match id.kind {
                IdentityKind::User => PrincipalType::User,
                IdentityKind::Role => PrincipalType::Role,
            };
            PrincipalAccess {
                principal: id.arn.clone(),
                principal_type: ty,
                actions: ctx.evaluate(&ctx.caller_of(&id.arn, ty, Some(id))),
                notes: id.notes.clone(),
            }
        };
        principals.push(row);
    }
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
    /// Its principal entries, account ids already written as root ARNs: compared with every
    /// principal of the table, so normalised once per key rather than once per comparison.
    principals: Vec<NamedPrincipal<'a>>,
}

/// One entry of a key-policy statement's `Principal` or `NotPrincipal`.
struct NamedPrincipal<'a> {
    kind: PrincipalKind,
    /// The value; for `AWS` entries, an account id becomes its root ARN.
    value: Cow<'a, str>,
    /// An `AWS` entry that stands for everyone (`*`, or a wildcard account).
    public: bool,
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

/// Where a permission (or a Deny) comes from, before it is written out as a [`Reason`].
#[derive(Clone, Copy)]
enum Path<'p> {
    KeyPolicy(&'p KeyStatement<'p>),
    Delegation(&'p KeyStatement<'p>),
    Grant(&'p CompiledGrant<'p>),
    Identity(&'p Source, &'p IdentityStatement),
    Boundary(&'p str, &'p IdentityStatement),
}

/// One path that reaches the caller: its actions and whether its conditions hold.
#[derive(Clone, Copy)]
struct Reach<'p> {
    actions: ActionMask,
    decision: Decision,
    path: Path<'p>,
}

/// A [`Reach`] whose reason is in the caller's [`ReasonArena`].
#[derive(Clone, Copy)]
struct Found {
    actions: ActionMask,
    decision: Decision,
    reason: usize,
}

/// The distinct reasons of one caller, and the shared lists built from them: actions reached
/// through the same paths share one list.
#[derive(Default)]
struct ReasonArena {
    all: Vec<Reason>,
    lists: Vec<(Vec<usize>, Reasons)>,
}

impl ReasonArena {
    fn add(&mut self, reason: Reason) -> usize {
        match self.all.iter().position(|r| *r == reason) {
            Some(i) => i,
            None => {
                self.all.push(reason);
                self.all.len() - 1
            }
        }
    }

    fn list(&mut self, ids: &[usize]) -> Reasons {
        // Neighbouring actions usually share their paths: the newest list is tried first, and
        // the lists are a handful of small ids, compared inline.
        let same =
            |key: &[usize]| key.len() == ids.len() && key.iter().zip(ids).all(|(a, b)| a == b);
        if let Some((_, list)) = self.lists.iter().rev().find(|(key, _)| same(key)) {
            return list.clone();
        }
        let list: Reasons = ids.iter().map(|&i| self.all[i].clone()).collect();
        self.lists.push((ids.to_vec(), list.clone()));
        list
    }
}

/// The paths that grant one action, while they are being gathered.
#[derive(Default)]
struct Gathered {
    /// Into the caller's [`ReasonArena`], in order of first appearance.
    reasons: Vec<usize>,
    /// Some path has no open condition.
    certain: bool,
    /// Some path exists.
    any: bool,
}

impl Gathered {
    fn clear(&mut self) {
        self.reasons.clear();
        self.certain = false;
        self.any = false;
    }

    fn add(&mut self, reasons: &[usize], certain: bool) {
        self.any = true;
        self.certain |= certain;
        for &r in reasons {
            if !self.reasons.contains(&r) {
                self.reasons.push(r);
            }
        }
    }
}

/// What the boundary says about one action.
#[derive(Clone, Copy)]
enum BoundaryVerdict {
    NotSet,
    Blocks,
    /// Allowed; the reasons are in the action's boundary list.
    Allows {
        certain: bool,
    },
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
                principals: st
                    .principals
                    .entries
                    .iter()
                    .map(|e| match e.kind {
                        PrincipalKind::Aws => NamedPrincipal {
                            kind: e.kind,
                            value: normalise_aws(&e.value, partition),
                            public: is_public_aws_principal(&e.value),
                        },
                        _ => NamedPrincipal {
                            kind: e.kind,
                            value: Cow::Borrowed(&e.value),
                            public: false,
                        },
                    })
                    .collect(),
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
                    .map(|p| normalise_aws(p, partition).into_owned()),
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
        normalise_aws(value, self.partition).into_owned()
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
        self.caller_of(arn, ty, identity)
    }

    /// A caller whose identity in the index is already known.
    fn caller_of<'c>(
        &'c self,
        arn: &'c str,
        ty: PrincipalType,
        identity: Option<&'c Identity>,
    ) -> Caller<'c> {
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
    fn covers_caller(&self, ks: &KeyStatement<'_>, caller: &Caller<'_>, deny: bool) -> bool {
        let matches_entry = |p: &NamedPrincipal<'_>, generous: bool| -> bool {
            let value = p.value.as_ref();
            match p.kind {
                PrincipalKind::Aws => {
                    if p.public || value == caller.arn {
                        return true;
                    }
                    if !generous {
                        return false;
                    }
                    let account = caller.facts.account.unwrap_or("");
                    (!account.is_empty() && is_root_arn_of(value, account))
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
        if ks.st.principals.negated {
            // NotPrincipal: everyone except the listed, read generously (whoever a listed
            // principal stands for is excluded) so that a guardrail is never over-applied.
            return !ks.principals.iter().any(|p| matches_entry(p, true));
        }
        ks.st.principals.wildcard || ks.principals.iter().any(|p| matches_entry(p, deny))
    }

    /// True when the statement names the caller itself (not through `*`).
    fn names_explicitly(&self, ks: &KeyStatement<'_>, caller: &Caller<'_>) -> bool {
        !ks.st.principals.negated
            && ks.principals.iter().any(|p| {
                p.kind == PrincipalKind::Aws && !p.public && p.value.as_ref() == caller.arn
            })
    }

    /// The reason a path gives, with its condition when the condition is open.
    fn reason(&self, path: Path<'_>, decision: Decision) -> Reason {
        let open = decision == Decision::Open;
        match path {
            Path::KeyPolicy(ks) => Reason::KeyPolicy {
                statement_index: ks.st.index,
                sid: ks.st.sid.clone(),
                condition: open.then(|| ks.condition()).flatten(),
            },
            Path::Delegation(ks) => Reason::Delegation {
                statement_index: ks.st.index,
                sid: ks.st.sid.clone(),
                condition: open.then(|| ks.condition()).flatten(),
            },
            Path::Grant(grant) => Reason::Grant {
                grant_id: grant.id.to_string(),
            },
            Path::Identity(source, st) => Reason::IdentityPolicy {
                policy: source.policy.clone(),
                via: source.via.clone(),
                statement_index: st.index,
                sid: st.sid.clone(),
                condition: if open {
                    st.condition_json.clone()
                } else {
                    None
                },
            },
            Path::Boundary(policy, st) => Reason::Boundary {
                policy: policy.to_string(),
                statement_index: Some(st.index),
                sid: st.sid.clone(),
                condition: if open {
                    st.condition_json.clone()
                } else {
                    None
                },
            },
        }
    }

    fn evaluate(&self, caller: &Caller<'_>) -> Vec<ActionAccess> {
        // First only what reaches the caller (no reasons are written yet: most identities of an
        // account reach no key action, and their rows must cost next to nothing).
        let mut direct = Vec::new();
        let mut denies = Vec::new();
        for ks in &self.statements {
            if !self.covers_caller(ks, caller, !ks.allow) {
                continue;
            }
            let decision = decide(&ks.st.conditions, &caller.facts);
            if decision == Decision::Fails {
                continue;
            }
            let reach = Reach {
                actions: ks.actions,
                decision,
                path: Path::KeyPolicy(ks),
            };
            if ks.allow {
                direct.push(reach);
            } else {
                denies.push(reach);
            }
        }
        let grants: Vec<Reach<'_>> = self
            .grants
            .iter()
            .filter(|g| g.grantee.as_deref() == Some(caller.arn))
            .map(|g| Reach {
                actions: g.actions,
                decision: Decision::Holds,
                path: Path::Grant(g),
            })
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
                        delegation.push(Reach {
                            actions: ks.actions,
                            decision,
                            path: Path::Delegation(ks),
                        });
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
                    let reach = Reach {
                        actions: st.actions,
                        decision,
                        path: Path::Identity(source, st),
                    };
                    if st.allow {
                        identity_allows.push(reach);
                    } else {
                        denies.push(reach);
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
                    let reach = Reach {
                        actions: st.actions,
                        decision,
                        path: Path::Boundary(policy, st),
                    };
                    if st.allow {
                        boundary_allows.push(reach);
                    } else {
                        denies.push(reach);
                    }
                }
            }
        }

        let union = |list: &[Reach<'_>]| {
            list.iter()
                .fold(ActionMask::EMPTY, |m, r| m.union(r.actions))
        };
        let iam_mask = union(&delegation).intersect(union(&identity_allows));
        let candidates = union(&direct).union(union(&grants)).union(iam_mask);
        if candidates.is_empty() {
            return Vec::new();
        }

        // Now the reasons, each written once for the caller.
        let mut arena = ReasonArena::default();
        let mut found = |list: &[Reach<'_>]| -> Vec<Found> {
            list.iter()
                .map(|r| Found {
                    actions: r.actions,
                    decision: r.decision,
                    reason: arena.add(self.reason(r.path, r.decision)),
                })
                .collect()
        };
        // A key policy naming a role ARN is still limited by the role's boundary; one naming a
        // user or a session is not (IAM policy evaluation logic, same account).
        let direct: Vec<(Found, bool)> = found(&direct)
            .into_iter()
            .zip(&direct)
            .map(|(f, r)| {
                let limited = caller.ty == PrincipalType::Role
                    && matches!(r.path, Path::KeyPolicy(ks) if self.names_explicitly(ks, caller));
                (f, limited)
            })
            .collect();
        let grants = found(&grants);
        let delegation = found(&delegation);
        let identity_allows = found(&identity_allows);
        let boundary_allows = found(&boundary_allows);
        let denies = found(&denies);
        let unknown_boundary = match caller.identity.map(|i| &i.boundary) {
            Some(Boundary::Unknown(policy)) => Some(arena.add(Reason::Boundary {
                policy: policy.clone(),
                statement_index: None,
                sid: None,
                condition: None,
            })),
            _ => None,
        };

        let mut out = Vec::with_capacity(candidates.0.count_ones() as usize);
        let mut g = Gathered::default();
        let mut open_denies: Vec<usize> = Vec::new();
        let mut boundary_reasons: Vec<usize> = Vec::new();
        let mut iam_reasons: Vec<usize> = Vec::new();
        'actions: for i in candidates.indexes() {
            let action = ActionMask(1 << i);
            open_denies.clear();
            for d in denies.iter().filter(|d| d.actions.contains(action)) {
                if d.decision == Decision::Holds {
                    continue 'actions;
                }
                open_denies.push(d.reason);
            }
            boundary_reasons.clear();
            let boundary = match caller.identity.map(|i| &i.boundary) {
                None | Some(Boundary::None) => BoundaryVerdict::NotSet,
                Some(Boundary::Unknown(_)) => {
                    boundary_reasons.extend(unknown_boundary);
                    BoundaryVerdict::Allows { certain: false }
                }
                Some(Boundary::Policy { .. }) => {
                    let mut certain = false;
                    for b in boundary_allows
                        .iter()
                        .filter(|b| b.actions.contains(action))
                    {
                        certain |= b.decision == Decision::Holds;
                        boundary_reasons.push(b.reason);
                    }
                    if boundary_reasons.is_empty() {
                        BoundaryVerdict::Blocks
                    } else {
                        BoundaryVerdict::Allows { certain }
                    }
                }
            };
            g.clear();
            for (d, limited) in &direct {
                if !d.actions.contains(action) {
                    continue;
                }
                let certain = d.decision == Decision::Holds;
                match (limited, boundary) {
                    (true, BoundaryVerdict::Blocks) => {}
                    (true, BoundaryVerdict::Allows { certain: c }) => {
                        g.add(&[d.reason], certain && c);
                        g.add(&boundary_reasons, certain && c);
                    }
                    _ => g.add(&[d.reason], certain),
                }
            }
            for grant in grants.iter().filter(|g| g.actions.contains(action)) {
                g.add(&[grant.reason], true);
            }
            if iam_mask.contains(action) && !matches!(boundary, BoundaryVerdict::Blocks) {
                iam_reasons.clear();
                let mut delegation_certain = false;
                for d in delegation.iter().filter(|d| d.actions.contains(action)) {
                    delegation_certain |= d.decision == Decision::Holds;
                    iam_reasons.push(d.reason);
                }
                let mut identity_certain = false;
                for a in identity_allows
                    .iter()
                    .filter(|a| a.actions.contains(action))
                {
                    identity_certain |= a.decision == Decision::Holds;
                    iam_reasons.push(a.reason);
                }
                let mut certain = delegation_certain && identity_certain;
                if let BoundaryVerdict::Allows { certain: c } = boundary {
                    certain &= c;
                    iam_reasons.extend_from_slice(&boundary_reasons);
                }
                g.add(&iam_reasons, certain);
            }
            if !g.any {
                continue;
            }
            let (name, group) = KMS_KEY_ACTIONS[i];
            out.push(ActionAccess {
                action: Cow::Borrowed(name),
                group,
                access: if g.certain && open_denies.is_empty() {
                    AccessLevel::Allowed
                } else {
                    AccessLevel::Conditional
                },
                reasons: arena.list(&g.reasons),
                denies: arena.list(&open_denies),
            });
        }
        out
    }
}

/// Bare account ids become the account's root ARN, so each principal has one name.
fn normalise_aws<'v>(value: &'v str, partition: &str) -> Cow<'v, str> {
    if is_account_id(value) {
        Cow::Owned(format!("arn:{partition}:iam::{value}:root"))
    } else {
        Cow::Borrowed(value)
    }
}
