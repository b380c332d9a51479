//! The KMS actions the rules ask about, and which of them a statement's action patterns cover:
//! worked out once per statement, so that a rule tests a bit instead of globbing every pattern
//! against every action again (that globbing was a third of the evaluation time).

use std::ops::{BitAnd, BitOr};

use super::matching::action_matches;

/// `kms:PutKeyPolicy`: the action that makes a principal an administrator.
pub const PUT_KEY_POLICY: &str = "kms:PutKeyPolicy";

/// `kms:CreateGrant`: the action behind KMS-GRANT-ESCALATION.
pub const CREATE_GRANT: &str = "kms:CreateGrant";

/// Key management actions (RULES.md §1 ADMIN).
pub const ADMIN_ACTIONS: [&str; 14] = [
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:DisableKey",
    "kms:EnableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKeyRotation",
    "kms:UpdateKeyDescription",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ImportKeyMaterial",
    "kms:DeleteImportedKeyMaterial",
    "kms:UpdatePrimaryRegion",
    "kms:RotateKeyOnDemand",
];

/// Cryptographic operations (RULES.md §1 CRYPTO).
pub const CRYPTO_ACTIONS: [&str; 13] = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:Sign",
    "kms:Verify",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
];

const N_ADMIN: usize = ADMIN_ACTIONS.len();
const N_CRYPTO: usize = CRYPTO_ACTIONS.len();
const N_KNOWN: usize = N_ADMIN + N_CRYPTO + 1;

/// Every action a rule asks about; bit `i` of an [`ActionSet`] stands for `KNOWN[i]`. The order
/// (ADMIN, then CRYPTO, each in RULES.md order) is the order messages list actions in.
const KNOWN: [&str; N_KNOWN] = {
    let mut known = [""; N_KNOWN];
    let mut i = 0;
    while i < N_ADMIN {
        known[i] = ADMIN_ACTIONS[i];
        i += 1;
    }
    while i < N_ADMIN + N_CRYPTO {
        known[i] = CRYPTO_ACTIONS[i - N_ADMIN];
        i += 1;
    }
    known[i] = CREATE_GRANT;
    known
};

/// The service prefix every known action shares.
const SERVICE: &[u8] = b"kms:";

/// For each letter `a`–`z`, the known actions whose name (after `kms:`) starts with it, in
/// either case.
const BY_FIRST_LETTER: [u32; 26] = {
    let mut by_letter = [0u32; 26];
    let mut i = 0;
    while i < N_KNOWN {
        let name = KNOWN[i].as_bytes();
        assert!(name.len() > SERVICE.len());
        let mut j = 0;
        while j < SERVICE.len() {
            assert!(name[j] == SERVICE[j]);
            j += 1;
        }
        let letter = name[SERVICE.len()].to_ascii_lowercase();
        assert!(letter.is_ascii_lowercase());
        by_letter[(letter - b'a') as usize] |= 1 << i;
        i += 1;
    }
    by_letter
};

// The bit constants below rely on these positions.
const _: () = assert!(KNOWN.len() <= 32);
const _: () = assert!(matches!(ADMIN_ACTIONS[0].as_bytes(), b"kms:PutKeyPolicy"));

/// A set of the known actions (see `KNOWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActionSet(u32);

impl ActionSet {
    pub const EMPTY: Self = Self(0);
    pub const ADMIN: Self = Self((1 << N_ADMIN) - 1);
    pub const CRYPTO: Self = Self(((1 << N_CRYPTO) - 1) << N_ADMIN);
    pub const PUT_KEY_POLICY: Self = Self(1);
    pub const CREATE_GRANT: Self = Self(1 << (N_KNOWN - 1));
    const ALL: Self = Self((1 << N_KNOWN) - 1);

    /// The known actions that `Action` patterns (or, `negated`, `NotAction` patterns) grant:
    /// exactly `Actions::grants` for each of them.
    pub fn granted_by<'p>(patterns: impl IntoIterator<Item = &'p str>, negated: bool) -> Self {
        let mut matched = Self::EMPTY;
        for pattern in patterns {
            matched = matched | Self::matched_by(pattern);
            if matched == Self::ALL {
                break;
            }
        }
        if negated {
            Self(Self::ALL.0 & !matched.0)
        } else {
            matched
        }
    }

    /// The known actions one pattern matches (case-insensitive glob, as [`action_matches`]).
    fn matched_by(pattern: &str) -> Self {
        // Nearly every pattern is a name (`kms:Decrypt`) or a prefix (`kms:Create*`, `kms:*`, `*`),
        // which need no glob. Only ASCII patterns take that shortcut: the glob lowercases other
        // characters by Unicode rules (the Kelvin sign `K` matches `k`), so those are globbed.
        let bytes = pattern.as_bytes();
        let stem = bytes
            .iter()
            .position(|&b| b == b'*' || b == b'?')
            .unwrap_or(bytes.len());
        if bytes.is_ascii() && bytes[stem..].iter().all(|&b| b == b'*') {
            return Self::named_or_prefixed(&bytes[..stem], stem < bytes.len());
        }
        let mut bits = 0;
        for (i, action) in KNOWN.iter().enumerate() {
            if action_matches(pattern, action) {
                bits |= 1 << i;
            }
        }
        Self(bits)
    }

    /// The known actions equal to `stem` or, for a `prefix`, starting with it; ASCII case
    /// ignored.
    fn named_or_prefixed(stem: &[u8], prefix: bool) -> Self {
        let Some((service, rest)) = stem.split_at_checked(SERVICE.len()) else {
            // `*`, `k*`, `kMs:*`: everything, if the stem starts the shared `kms:`.
            let starts_service = SERVICE[..stem.len()].eq_ignore_ascii_case(stem);
            return if prefix && starts_service {
                Self::ALL
            } else {
                Self::EMPTY
            };
        };
        if !service.eq_ignore_ascii_case(SERVICE) {
            return Self::EMPTY;
        }
        let Some(first) = rest.first() else {
            return if prefix { Self::ALL } else { Self::EMPTY };
        };
        // The first letter of the name leaves a handful of candidates to compare.
        let candidates = match first.to_ascii_lowercase() {
            letter @ b'a'..=b'z' => BY_FIRST_LETTER[usize::from(letter - b'a')],
            _ => 0,
        };
        let mut bits = 0;
        let mut remaining: u32 = candidates;
        while remaining != 0 {
            let i = remaining.trailing_zeros();
            remaining &= remaining - 1;
            // Both start with `kms:`; candidates nearly always differ a letter or two later,
            // so compare byte by byte and stop at the first difference.
            let action = &KNOWN[i as usize].as_bytes()[SERVICE.len()..];
            let same_length = action.len() == rest.len();
            let hit = (prefix || same_length)
                && action.len() >= rest.len()
                && action
                    .iter()
                    .zip(rest)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b));
            if hit {
                bits |= 1 << i;
            }
        }
        Self(bits)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when `self` holds every action of `other`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The actions of `self` that `other` lacks.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The names, in table order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        KNOWN
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| *name)
    }
}

impl BitOr for ActionSet {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl BitAnd for ActionSet {
    type Output = Self;
    fn bitand(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::Actions;

    /// The set must be exactly what `Actions::grants` says, action by action.
    fn agrees(patterns: &[&str]) {
        for negated in [false, true] {
            let actions = Actions {
                negated,
                patterns: patterns.iter().map(|p| p.to_string()).collect(),
            };
            let set = ActionSet::granted_by(patterns.iter().copied(), negated);
            for (i, action) in KNOWN.iter().enumerate() {
                assert_eq!(
                    set.contains(ActionSet(1 << i)),
                    actions.grants(action),
                    "{patterns:?} (negated={negated}) on {action}"
                );
            }
        }
    }

    #[test]
    fn agrees_with_the_glob() {
        let cases: &[&[&str]] = &[
            &["*"],
            &["kms:*"],
            &["KMS:*"],
            &["kms:**"],
            &["kms:Decrypt"],
            &["KMS:DECRYPT", "kms:putkeypolicy"],
            &["kms:Create*", "kms:Put*"],
            &["kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
            &["kms:*Key*"],
            &["kms:?ecrypt"],
            &["kms:Get*", "kms:Describe*", "kms:List*"],
            &["kms:"],
            &[""],
            &["s3:*"],
            &["\u{212A}ms:Decrypt"],
            &["\u{212A}MS:*"],
            &["kms:Décrypt"],
            &["*:Decrypt"],
            &["kms:Sign", "kms:Verify*"],
            &["k*"],
            &["KM*"],
            &["kms"],
            &["x*"],
            &["kms:1*"],
            &["kms:_*"],
            &["kms:[*"],
        ];
        for patterns in cases {
            agrees(patterns);
        }
        // Every prefix of every known action, in both cases, as a name and as a prefix pattern.
        for action in KNOWN {
            for end in 0..=action.len() {
                let head = &action[..end];
                for head in [
                    head.to_string(),
                    head.to_ascii_uppercase(),
                    head.to_ascii_lowercase(),
                ] {
                    agrees(&[&head]);
                    agrees(&[&format!("{head}*")]);
                    agrees(&[&format!("{head}?*")]);
                }
            }
        }
    }

    #[test]
    fn sets_are_where_the_rules_expect_them() {
        assert_eq!(ActionSet::ADMIN.names().collect::<Vec<_>>(), ADMIN_ACTIONS);
        assert_eq!(
            ActionSet::CRYPTO.names().collect::<Vec<_>>(),
            CRYPTO_ACTIONS
        );
        assert_eq!(
            ActionSet::PUT_KEY_POLICY.names().collect::<Vec<_>>(),
            [PUT_KEY_POLICY]
        );
        assert_eq!(
            ActionSet::CREATE_GRANT.names().collect::<Vec<_>>(),
            [CREATE_GRANT]
        );
        assert_eq!(ActionSet::ALL.len(), N_KNOWN);
    }
}
