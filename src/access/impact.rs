//! What a policy change does to access: who loses, keeps and gains which actions.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::catalogue::ActionGroup;
use super::table::{AccessLevel, AccessTable, PrincipalAccess, PrincipalType};

/// A principal and the actions that changed for it, by group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalChange {
    pub principal: String,
    pub principal_type: PrincipalType,
    /// Group → actions (catalogue order). A loss includes an action that goes from allowed to
    /// conditional; a gain includes one that goes from conditional to allowed.
    pub actions: BTreeMap<ActionGroup, Vec<String>>,
}

/// A principal whose access is the same before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalKept {
    pub principal: String,
    pub principal_type: PrincipalType,
}

/// The difference between the access table of the current policy and of a proposed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessImpact {
    pub lose: Vec<PrincipalChange>,
    pub keep: Vec<PrincipalKept>,
    pub gain: Vec<PrincipalChange>,
    /// Principals that lose a cryptographic action: approving requires acknowledging them.
    pub loses_cryptographic: Vec<String>,
}

impl AccessImpact {
    /// True when the approval must acknowledge lost cryptographic access.
    pub fn requires_acknowledgement(&self) -> bool {
        !self.loses_cryptographic.is_empty()
    }
}

/// Compares two tables of the same key. A principal can both lose and gain (an administrator
/// that loses Decrypt); principals without access on either side are not listed.
pub fn impact(before: &AccessTable, after: &AccessTable) -> AccessImpact {
    let levels = |p: Option<&PrincipalAccess>| -> BTreeMap<String, (ActionGroup, AccessLevel)> {
        p.map(|p| {
            p.actions
                .iter()
                .map(|a| (a.action.to_string(), (a.group, a.access)))
                .collect()
        })
        .unwrap_or_default()
    };
    let mut names: BTreeSet<(&str, PrincipalType)> = BTreeSet::new();
    for p in before.principals.iter().chain(&after.principals) {
        names.insert((&p.principal, p.principal_type));
    }
    let mut out = AccessImpact {
        lose: Vec::new(),
        keep: Vec::new(),
        gain: Vec::new(),
        loses_cryptographic: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    for (name, ty) in names {
        if !seen.insert(name) {
            continue;
        }
        let b = levels(before.principal(name));
        let a = levels(after.principal(name));
        let mut lost: BTreeMap<ActionGroup, Vec<String>> = BTreeMap::new();
        let mut gained: BTreeMap<ActionGroup, Vec<String>> = BTreeMap::new();
        // Catalogue order inside each group, whatever the map order of names.
        for (action, group) in super::catalogue::KMS_KEY_ACTIONS {
            let was = b.get(action).map(|(_, l)| *l);
            let now = a.get(action).map(|(_, l)| *l);
            let loses = matches!(
                (was, now),
                (Some(_), None) | (Some(AccessLevel::Allowed), Some(AccessLevel::Conditional))
            );
            let gains = matches!(
                (was, now),
                (None, Some(_)) | (Some(AccessLevel::Conditional), Some(AccessLevel::Allowed))
            );
            if loses {
                lost.entry(group).or_default().push(action.to_string());
            }
            if gains {
                gained.entry(group).or_default().push(action.to_string());
            }
        }
        if lost.contains_key(&ActionGroup::Cryptographic) {
            out.loses_cryptographic.push(name.to_string());
        }
        if lost.is_empty() && gained.is_empty() {
            if !b.is_empty() {
                out.keep.push(PrincipalKept {
                    principal: name.to_string(),
                    principal_type: ty,
                });
            }
            continue;
        }
        if !lost.is_empty() {
            out.lose.push(PrincipalChange {
                principal: name.to_string(),
                principal_type: ty,
                actions: lost,
            });
        }
        if !gained.is_empty() {
            out.gain.push(PrincipalChange {
                principal: name.to_string(),
                principal_type: ty,
                actions: gained,
            });
        }
    }
    out
}
