//! The IAM inventory compiled once for many keys: every policy parsed once, only statements that
//! can touch a key action kept, and each user and role linked to the statements that apply to it.

use std::collections::HashMap;
use std::ops::Range;

use super::catalogue::ActionMask;
use super::identity::{IdentityStatement, compile};
use super::inventory::IamInventory;

/// Whether an identity is a user or a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityKind {
    User,
    Role,
}

/// A policy that applies to an identity, and through what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// The managed policy ARN, or `inline:<owner>/<name>`.
    pub policy: String,
    /// `user`, `role` or `group:<name>`.
    pub via: String,
    /// Its KMS statements in [`AccessIndex::statements`].
    pub statements: Range<usize>,
}

/// The permissions boundary of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Boundary {
    None,
    /// Set, but the policy is missing from the inventory or unreadable: what it allows is
    /// unknown.
    Unknown(String),
    Policy {
        policy: String,
        statements: Range<usize>,
    },
}

/// A user or role with everything that decides its access.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    pub arn: String,
    pub kind: IdentityKind,
    /// Sources with at least one KMS statement; empty for most identities of a real account.
    pub sources: Vec<Source>,
    pub boundary: Boundary,
    /// Policies whose permissions are unknown (missing from the inventory, unreadable).
    pub notes: Vec<String>,
    /// Union of the actions its Allow statements cover, for any resource: a quick "can this
    /// identity ever reach a key through IAM".
    pub allow_actions: ActionMask,
}

/// The pre-compiled IAM inventory of one account ([`super::evaluate_access`] takes it).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessIndex {
    pub(crate) account_id: String,
    /// Every KMS statement of every policy, each stored once however many identities share it.
    pub(crate) statements: Vec<IdentityStatement>,
    /// Users and roles sorted by ARN.
    pub(crate) identities: Vec<Identity>,
    by_arn: HashMap<String, usize>,
    role_by_name: HashMap<String, usize>,
}

struct Compiled {
    statements: Range<usize>,
    error: Option<String>,
}

impl AccessIndex {
    /// Parses every policy of the inventory once and links users and roles to their statements.
    pub fn new(inventory: &IamInventory) -> Self {
        let mut statements = Vec::new();
        let mut add = |text: &str| {
            let compiled = compile(text);
            let start = statements.len();
            statements.extend(compiled.statements);
            Compiled {
                statements: start..statements.len(),
                error: compiled.error,
            }
        };
        let managed: HashMap<&str, Compiled> = inventory
            .policies
            .iter()
            .map(|p| (p.arn.as_str(), add(&p.document)))
            .collect();
        let groups: HashMap<&str, Vec<(String, Compiled)>> = inventory
            .groups
            .iter()
            .map(|g| {
                let inline = g
                    .inline_policies
                    .iter()
                    .map(|p| (format!("inline:{}/{}", g.name, p.name), add(&p.document)))
                    .collect();
                (g.name.as_str(), inline)
            })
            .collect();
        let group_attached: HashMap<&str, &[String]> = inventory
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.attached_policies.as_slice()))
            .collect();

        let mut identities = Vec::new();
        for user in &inventory.users {
            let mut id = Identity::new(&user.arn, IdentityKind::User);
            for p in &user.inline_policies {
                let c = add(&p.document);
                id.link(format!("inline:{}/{}", user.name, p.name), "user", &c);
            }
            for arn in &user.attached_policies {
                id.link_managed(arn, "user", &managed);
            }
            for group in &user.groups {
                let via = format!("group:{group}");
                match (
                    groups.get(group.as_str()),
                    group_attached.get(group.as_str()),
                ) {
                    (Some(inline), Some(attached)) => {
                        for (label, c) in inline {
                            id.link(label.clone(), &via, c);
                        }
                        for arn in *attached {
                            id.link_managed(arn, &via, &managed);
                        }
                    }
                    _ => id.notes.push(format!(
                        "group {group} is not in the IAM inventory: its policies are unknown"
                    )),
                }
            }
            id.boundary = boundary(user.permissions_boundary.as_deref(), &managed);
            identities.push(id);
        }
        for role in &inventory.roles {
            let mut id = Identity::new(&role.arn, IdentityKind::Role);
            for p in &role.inline_policies {
                let c = add(&p.document);
                id.link(format!("inline:{}/{}", role.name, p.name), "role", &c);
            }
            for arn in &role.attached_policies {
                id.link_managed(arn, "role", &managed);
            }
            id.boundary = boundary(role.permissions_boundary.as_deref(), &managed);
            identities.push(id);
        }
        identities.sort_by(|a, b| a.arn.cmp(&b.arn));
        identities.dedup_by(|a, b| a.arn == b.arn);
        for id in &mut identities {
            id.allow_actions = id
                .sources
                .iter()
                .flat_map(|s| &statements[s.statements.clone()])
                .filter(|st| st.allow)
                .fold(ActionMask::EMPTY, |m, st| m.union(st.actions));
        }
        let by_arn = identities
            .iter()
            .enumerate()
            .map(|(i, id)| (id.arn.clone(), i))
            .collect();
        let role_by_name = inventory
            .roles
            .iter()
            .filter_map(|r| {
                identities
                    .binary_search_by(|id| id.arn.as_str().cmp(&r.arn))
                    .ok()
                    .map(|i| (r.name.clone(), i))
            })
            .collect();
        AccessIndex {
            account_id: inventory.account_id.clone(),
            statements,
            identities,
            by_arn,
            role_by_name,
        }
    }

    /// The account whose identities the index holds.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// How many KMS-relevant identity statements the index kept.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }

    /// The user or role with this ARN. A role session ARN finds its role by name, because STS
    /// drops the role's path from session ARNs.
    pub(crate) fn identity(&self, arn: &str) -> Option<&Identity> {
        if let Some(&i) = self.by_arn.get(arn) {
            return Some(&self.identities[i]);
        }
        let parsed = crate::policy::matching::Arn::parse(arn)?;
        let rest = parsed.resource.strip_prefix("assumed-role/")?;
        if parsed.service != "sts" || parsed.account != self.account_id {
            return None;
        }
        let name = rest.split('/').next()?;
        self.role_by_name.get(name).map(|&i| &self.identities[i])
    }
}

impl Identity {
    fn new(arn: &str, kind: IdentityKind) -> Self {
        Identity {
            arn: arn.to_string(),
            kind,
            sources: Vec::new(),
            boundary: Boundary::None,
            notes: Vec::new(),
            allow_actions: ActionMask::EMPTY,
        }
    }

    fn link(&mut self, policy: String, via: &str, compiled: &Compiled) {
        if let Some(error) = &compiled.error {
            self.notes.push(format!(
                "policy {policy} (via {via}) could not be read ({error}): its permissions are unknown"
            ));
        }
        if !compiled.statements.is_empty() {
            self.sources.push(Source {
                policy,
                via: via.to_string(),
                statements: compiled.statements.clone(),
            });
        }
    }

    fn link_managed(&mut self, arn: &str, via: &str, managed: &HashMap<&str, Compiled>) {
        match managed.get(arn) {
            Some(c) => self.link(arn.to_string(), via, c),
            None => self.notes.push(format!(
                "managed policy {arn} (via {via}) is not in the IAM inventory: its permissions are unknown"
            )),
        }
    }
}

fn boundary(arn: Option<&str>, managed: &HashMap<&str, Compiled>) -> Boundary {
    let Some(arn) = arn else {
        return Boundary::None;
    };
    match managed.get(arn) {
        Some(Compiled {
            statements,
            error: None,
        }) => Boundary::Policy {
            policy: arn.to_string(),
            statements: statements.clone(),
        },
        _ => Boundary::Unknown(arn.to_string()),
    }
}
