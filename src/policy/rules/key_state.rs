//! Key-level rules that read the key's metadata, not its policy: KMS-ROTATION-DISABLED,
//! KMS-PENDING-DELETION and KMS-UNREADABLE.

use super::{Finding, KeyManager, RuleId};

/// What KMS says about a key, as far as the key-level rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts<'a> {
    pub key_manager: KeyManager,
    /// `KeySpec`, e.g. `SYMMETRIC_DEFAULT`.
    pub key_spec: &'a str,
    /// `KeyState`, e.g. `Enabled`, `PendingDeletion`.
    pub key_state: &'a str,
    /// `Origin`, e.g. `AWS_KMS`, `EXTERNAL`.
    pub origin: &'a str,
    /// `GetKeyRotationStatus`, when it was asked.
    pub rotation_enabled: Option<bool>,
    /// `DeletionDate` as RFC 3339, when scheduled.
    pub deletion_date: Option<&'a str>,
}

/// Findings about the key itself.
pub fn evaluate_key(facts: &KeyFacts<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let pending = matches!(
        facts.key_state,
        "PendingDeletion" | "PendingReplicaDeletion"
    );
    // Only customer-managed symmetric keys with KMS-generated material support automatic rotation;
    // a key on its way out is reported as such instead.
    if facts.key_manager == KeyManager::Customer
        && facts.key_spec == "SYMMETRIC_DEFAULT"
        && facts.origin == "AWS_KMS"
        && facts.rotation_enabled == Some(false)
        && !pending
    {
        out.push(Finding::for_key(
            RuleId::RotationDisabled,
            "Automatic rotation of this symmetric customer managed key is off.".to_string(),
        ));
    }
    if pending {
        let when = facts
            .deletion_date
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        out.push(Finding::for_key(
            RuleId::PendingDeletion,
            format!("The key is scheduled for deletion{when}; data encrypted under it will be unrecoverable."),
        ));
    }
    out
}

/// The finding for a key whose policy could not be read, with the error AWS gave.
pub fn unreadable(reason: &str) -> Finding {
    Finding::for_key(
        RuleId::Unreadable,
        format!("The key policy could not be read ({reason}), so this key is not being checked."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> KeyFacts<'static> {
        KeyFacts {
            key_manager: KeyManager::Customer,
            key_spec: "SYMMETRIC_DEFAULT",
            key_state: "Enabled",
            origin: "AWS_KMS",
            rotation_enabled: Some(true),
            deletion_date: None,
        }
    }

    fn ids(f: &KeyFacts<'_>) -> Vec<RuleId> {
        evaluate_key(f).into_iter().map(|f| f.rule_id).collect()
    }

    #[test]
    fn rotation() {
        assert!(ids(&facts()).is_empty());
        let off = KeyFacts {
            rotation_enabled: Some(false),
            ..facts()
        };
        assert_eq!(ids(&off), vec![RuleId::RotationDisabled]);
        for other in [
            KeyFacts {
                key_spec: "RSA_2048",
                ..off.clone()
            },
            KeyFacts {
                key_manager: KeyManager::Aws,
                ..off.clone()
            },
            KeyFacts {
                origin: "EXTERNAL",
                ..off.clone()
            },
            KeyFacts {
                rotation_enabled: None,
                ..off.clone()
            },
        ] {
            assert!(ids(&other).is_empty(), "{other:?}");
        }
    }

    #[test]
    fn pending_deletion() {
        let f = KeyFacts {
            key_state: "PendingDeletion",
            rotation_enabled: Some(false),
            deletion_date: Some("2026-12-05T00:00:00Z"),
            ..facts()
        };
        let got = evaluate_key(&f);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].rule_id, RuleId::PendingDeletion);
        assert!(got[0].message.contains("2026-12-05"));
        assert_eq!(
            ids(&KeyFacts {
                key_state: "PendingReplicaDeletion",
                ..facts()
            }),
            vec![RuleId::PendingDeletion]
        );
    }

    #[test]
    fn unreadable_names_the_error() {
        let f = unreadable("AccessDeniedException");
        assert_eq!(f.rule_id, RuleId::Unreadable);
        assert!(f.message.contains("AccessDeniedException"));
    }
}
