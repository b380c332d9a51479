//! Every KMS action whose resource is a key, sorted into the four groups the access table shows.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::policy::matching::action_matches;

/// What an action lets a principal do with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionGroup {
    /// Manage the key: policy, state, rotation, deletion, tags, aliases, key material.
    Admin,
    /// The KMS cryptographic operations (RULES.md §1 CRYPTO).
    Cryptographic,
    /// Create, list, retire and revoke grants.
    Grant,
    /// Read metadata: describe, policy, rotation status, public key, tags.
    Read,
}

impl ActionGroup {
    /// All groups, in display order.
    pub const ALL: [ActionGroup; 4] = [
        ActionGroup::Admin,
        ActionGroup::Cryptographic,
        ActionGroup::Grant,
        ActionGroup::Read,
    ];

    /// The name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Cryptographic => "cryptographic",
            Self::Grant => "grant",
            Self::Read => "read",
        }
    }

    /// The actions of this group.
    pub fn mask(self) -> ActionMask {
        let mut mask = ActionMask::EMPTY;
        for (i, (_, group)) in KMS_KEY_ACTIONS.iter().enumerate() {
            if *group == self {
                mask.0 |= 1 << i;
            }
        }
        mask
    }
}

impl fmt::Display for ActionGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionGroup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown action group {s:?}: expected admin, cryptographic, grant or read")
            })
    }
}

/// Every KMS action that is authorized against a key ARN, with its group. Actions whose resource
/// is `*` (CreateKey, ListKeys, ListAliases, GenerateRandom, custom key stores, …) are not here:
/// no key policy or key-scoped identity statement governs them.
///
/// Aliases are management (renaming what applications resolve); GetParametersForImport is the
/// first half of ImportKeyMaterial, so it is admin too. RULES.md's narrower ADMIN set (for
/// KMS-NO-ADMIN and KMS-ADMIN-CAN-USE) is a subset of this group, and its CRYPTO set is exactly
/// the cryptographic group (tested).
pub const KMS_KEY_ACTIONS: [(&str, ActionGroup); 44] = [
    ("kms:CancelKeyDeletion", ActionGroup::Admin),
    ("kms:CreateAlias", ActionGroup::Admin),
    ("kms:DeleteAlias", ActionGroup::Admin),
    ("kms:DeleteImportedKeyMaterial", ActionGroup::Admin),
    ("kms:DisableKey", ActionGroup::Admin),
    ("kms:DisableKeyRotation", ActionGroup::Admin),
    ("kms:EnableKey", ActionGroup::Admin),
    ("kms:EnableKeyRotation", ActionGroup::Admin),
    ("kms:GetParametersForImport", ActionGroup::Admin),
    ("kms:ImportKeyMaterial", ActionGroup::Admin),
    ("kms:PutKeyPolicy", ActionGroup::Admin),
    ("kms:ReplicateKey", ActionGroup::Admin),
    ("kms:RotateKeyOnDemand", ActionGroup::Admin),
    ("kms:ScheduleKeyDeletion", ActionGroup::Admin),
    ("kms:SynchronizeMultiRegionKey", ActionGroup::Admin),
    ("kms:TagResource", ActionGroup::Admin),
    ("kms:UntagResource", ActionGroup::Admin),
    ("kms:UpdateAlias", ActionGroup::Admin),
    ("kms:UpdateKeyDescription", ActionGroup::Admin),
    ("kms:UpdatePrimaryRegion", ActionGroup::Admin),
    ("kms:Decrypt", ActionGroup::Cryptographic),
    ("kms:DeriveSharedSecret", ActionGroup::Cryptographic),
    ("kms:Encrypt", ActionGroup::Cryptographic),
    ("kms:GenerateDataKey", ActionGroup::Cryptographic),
    ("kms:GenerateDataKeyPair", ActionGroup::Cryptographic),
    (
        "kms:GenerateDataKeyPairWithoutPlaintext",
        ActionGroup::Cryptographic,
    ),
    (
        "kms:GenerateDataKeyWithoutPlaintext",
        ActionGroup::Cryptographic,
    ),
    ("kms:GenerateMac", ActionGroup::Cryptographic),
    ("kms:ReEncryptFrom", ActionGroup::Cryptographic),
    ("kms:ReEncryptTo", ActionGroup::Cryptographic),
    ("kms:Sign", ActionGroup::Cryptographic),
    ("kms:Verify", ActionGroup::Cryptographic),
    ("kms:VerifyMac", ActionGroup::Cryptographic),
    ("kms:CreateGrant", ActionGroup::Grant),
    ("kms:ListGrants", ActionGroup::Grant),
    ("kms:RetireGrant", ActionGroup::Grant),
    ("kms:RevokeGrant", ActionGroup::Grant),
    ("kms:DescribeKey", ActionGroup::Read),
    ("kms:GetKeyPolicy", ActionGroup::Read),
    ("kms:GetKeyRotationStatus", ActionGroup::Read),
    ("kms:GetPublicKey", ActionGroup::Read),
    ("kms:ListKeyPolicies", ActionGroup::Read),
    ("kms:ListKeyRotations", ActionGroup::Read),
    ("kms:ListResourceTags", ActionGroup::Read),
];

const N_ACTIONS: usize = KMS_KEY_ACTIONS.len();
const _: () = assert!(N_ACTIONS <= 64);

/// A set of [`KMS_KEY_ACTIONS`]: bit `i` stands for entry `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ActionMask(pub u64);

impl ActionMask {
    /// No action.
    pub const EMPTY: Self = Self(0);
    /// Every key action.
    pub const ALL: Self = Self(if N_ACTIONS == 64 {
        u64::MAX
    } else {
        (1 << N_ACTIONS) - 1
    });

    /// The actions that `Action` patterns (or, `negated`, `NotAction` patterns) cover; patterns
    /// are case-insensitive globs (RULES.md §1).
    pub fn granted_by<S: AsRef<str>>(patterns: &[S], negated: bool) -> Self {
        let mut matched = Self::EMPTY;
        for pattern in patterns {
            matched.0 |= Self::matched_by(pattern.as_ref()).0;
        }
        if negated {
            Self(Self::ALL.0 & !matched.0)
        } else {
            matched
        }
    }

    /// The actions one pattern covers. Patterns of other services (`s3:*`, most of a typical
    /// account) are rejected on their stem without globbing 44 names.
    fn matched_by(pattern: &str) -> Self {
        const SERVICE: &str = "kms:";
        let stem_len = pattern.find(['*', '?']).unwrap_or(pattern.len());
        let stem = &pattern.as_bytes()[..stem_len];
        if pattern.is_ascii() {
            let n = stem.len().min(SERVICE.len());
            if !stem[..n].eq_ignore_ascii_case(&SERVICE.as_bytes()[..n]) {
                return Self::EMPTY;
            }
        }
        let mut bits = 0;
        for (i, (action, _)) in KMS_KEY_ACTIONS.iter().enumerate() {
            if action_matches(pattern, action) {
                bits |= 1 << i;
            }
        }
        Self(bits)
    }

    /// The mask of one action name (any case); empty for an action that is not a key action.
    pub fn of_action(name: &str) -> Self {
        match KMS_KEY_ACTIONS
            .iter()
            .position(|(a, _)| a.eq_ignore_ascii_case(name))
        {
            Some(i) => Self(1 << i),
            None => Self::EMPTY,
        }
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when `self` holds every action of `other`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when the sets share an action.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Union.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Intersection.
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The actions of `self` that `other` lacks.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Indexes into [`KMS_KEY_ACTIONS`], in catalogue order.
    pub fn indexes(self) -> impl Iterator<Item = usize> {
        let mut remaining = self.0;
        std::iter::from_fn(move || {
            if remaining == 0 {
                return None;
            }
            let i = remaining.trailing_zeros() as usize;
            remaining &= remaining - 1;
            Some(i)
        })
    }

    /// The action names, in catalogue order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.indexes().map(|i| KMS_KEY_ACTIONS[i].0)
    }
}

/// The group of a key action (any case); `None` for anything else.
pub fn group_of(action: &str) -> Option<ActionGroup> {
    KMS_KEY_ACTIONS
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(action))
        .map(|(_, g)| *g)
}

/// The key action a grant operation names (`Decrypt` or `kms:Decrypt`, any case).
pub fn grant_operation(operation: &str) -> Option<&'static str> {
    let name = operation
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("kms:"))
        .map_or(operation, |_| &operation[4..]);
    KMS_KEY_ACTIONS
        .iter()
        .map(|(a, _)| *a)
        .find(|a| a[4..].eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::{ADMIN_ACTIONS, CRYPTO_ACTIONS};

    #[test]
    fn agrees_with_the_rules_sets() {
        for a in ADMIN_ACTIONS {
            assert_eq!(group_of(a), Some(ActionGroup::Admin), "{a}");
        }
        let crypto: Vec<_> = ActionGroup::Cryptographic.mask().names().collect();
        let mut want = CRYPTO_ACTIONS.to_vec();
        want.sort();
        let mut got = crypto.clone();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn groups_partition_the_catalogue() {
        let mut union = ActionMask::EMPTY;
        for g in ActionGroup::ALL {
            assert!(!union.intersects(g.mask()));
            union = union.union(g.mask());
        }
        assert_eq!(union, ActionMask::ALL);
        let mut names: Vec<_> = KMS_KEY_ACTIONS.iter().map(|(a, _)| *a).collect();
        names.dedup();
        assert_eq!(names.len(), KMS_KEY_ACTIONS.len());
    }

    #[test]
    fn patterns() {
        let m = |p: &[&str], neg| ActionMask::granted_by(p, neg);
        assert_eq!(m(&["*"], false), ActionMask::ALL);
        assert_eq!(m(&["kms:*"], false), ActionMask::ALL);
        assert_eq!(m(&["KMS:*"], false), ActionMask::ALL);
        assert_eq!(m(&["k*"], false), ActionMask::ALL);
        assert_eq!(m(&["s3:*"], false), ActionMask::EMPTY);
        assert_eq!(
            m(&["*:Decrypt"], false),
            ActionMask::of_action("kms:Decrypt")
        );
        assert_eq!(
            m(&["kms:Get*"], false).names().collect::<Vec<_>>(),
            [
                "kms:GetParametersForImport",
                "kms:GetKeyPolicy",
                "kms:GetKeyRotationStatus",
                "kms:GetPublicKey"
            ]
        );
        assert_eq!(
            m(&["kms:decrypt"], false).names().collect::<Vec<_>>(),
            ["kms:Decrypt"]
        );
        assert_eq!(
            m(&["kms:*"], true),
            ActionMask::EMPTY,
            "NotAction kms:* grants no key action"
        );
        assert_eq!(
            m(&["s3:*"], true),
            ActionMask::ALL,
            "NotAction of another service grants every key action"
        );
        assert_eq!(grant_operation("Decrypt"), Some("kms:Decrypt"));
        assert_eq!(
            grant_operation("kms:generatedatakey"),
            Some("kms:GenerateDataKey")
        );
        assert_eq!(grant_operation("CreateKey"), None);
    }
}
