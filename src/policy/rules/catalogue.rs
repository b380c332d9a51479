//! What each rule means for a person: title, why it matters, how to fix it, where to read more.

use super::{RuleId, Severity};

/// One catalogue entry.
#[derive(Debug)]
pub struct RuleInfo {
    pub id: RuleId,
    pub severity: Severity,
    pub title: &'static str,
    pub rationale: &'static str,
    pub remediation: &'static str,
    pub references: &'static [&'static str],
}

const KC_PREVENT: &str = "https://repost.aws/knowledge-center/kms-prevent-access";
const DEFAULT_POLICY: &str =
    "https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html";
const OVERVIEW: &str =
    "https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html";
const EXTERNAL: &str = "https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html";

static CATALOGUE: [RuleInfo; 14] = [
    RuleInfo {
        id: RuleId::Delegation,
        severity: Severity::High,
        title: "Key policy delegates the key to IAM",
        rationale: "An Allow to the account principal without a condition pinning aws:PrincipalType to Account lets every IAM policy in the account grant this key: anyone who can edit IAM can use or manage it.",
        remediation: "Name the key administrators explicitly, then give the root statement the Sid EnableRootAccessAndPreventPermissionDelegation and the condition {\"StringEquals\": {\"aws:PrincipalType\": \"Account\"}} (keyward fix does both).",
        references: &[KC_PREVENT, DEFAULT_POLICY],
    },
    RuleInfo {
        id: RuleId::Public,
        severity: Severity::Critical,
        title: "Key is usable by any AWS account",
        rationale: "An Allow to Principal \"*\" (or with NotPrincipal) that no condition pins to known accounts or organisations lets principals of any AWS account call the key.",
        remediation: "Replace the wildcard with the principals that need the key, or add a condition on aws:PrincipalAccount, kms:CallerAccount or aws:PrincipalOrgID with fixed values.",
        references: &[OVERVIEW, "AWS Security Hub KMS.5"],
    },
    RuleInfo {
        id: RuleId::CrossAccount,
        severity: Severity::High,
        title: "Key is shared with an untrusted account",
        rationale: "An Allow names a principal of another AWS account that is not on this account's list of trusted accounts; that account's IAM administrators decide who there can use the key.",
        remediation: "Remove the external principal, or add the account to trusted_accounts if sharing is intended.",
        references: &[EXTERNAL],
    },
    RuleInfo {
        id: RuleId::NoAdmin,
        severity: Severity::Medium,
        title: "No key administrator besides the account root",
        rationale: "No IAM user or role of the account holds kms:PutKeyPolicy in the key policy itself; once IAM delegation is removed, nobody but the root user could manage the key.",
        remediation: "Add an \"Allow access for Key Administrators\" statement naming the administrator roles (configure key_admins for keyward fix).",
        references: &[DEFAULT_POLICY, KC_PREVENT],
    },
    RuleInfo {
        id: RuleId::AdminCanUse,
        severity: Severity::Medium,
        title: "Key administrator can also use the key",
        rationale: "A principal that can administer the key can also run cryptographic operations with it, which breaks separation of duties.",
        remediation: "Give administrative and cryptographic permissions to different principals.",
        references: &[
            DEFAULT_POLICY,
            "https://docs.aws.amazon.com/kms/latest/developerguide/least-privilege.html",
        ],
    },
    RuleInfo {
        id: RuleId::WildcardAction,
        severity: Severity::Medium,
        title: "Wildcard action granted to a principal other than root",
        rationale: "kms:* or * grants every current and future KMS action, including key management and deletion.",
        remediation: "List the actions the principal needs.",
        references: &["https://docs.aws.amazon.com/kms/latest/developerguide/least-privilege.html"],
    },
    RuleInfo {
        id: RuleId::NotPrincipal,
        severity: Severity::High,
        title: "Allow with NotPrincipal",
        rationale: "Allow with NotPrincipal grants the key to every principal except those listed, including principals of other accounts.",
        remediation: "Use Principal with the principals that need access.",
        references: &[
            "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notprincipal.html",
        ],
    },
    RuleInfo {
        id: RuleId::NotAction,
        severity: Severity::Medium,
        title: "Allow with NotAction",
        rationale: "Allow with NotAction grants every action except those listed, including actions added to KMS later.",
        remediation: "Use Action with the actions the principal needs.",
        references: &[
            "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html",
        ],
    },
    RuleInfo {
        id: RuleId::GrantEscalation,
        severity: Severity::Medium,
        title: "kms:CreateGrant without kms:GrantIsForAWSResource",
        rationale: "A principal that may create grants can hand the key's permissions to any other principal, outside the key policy.",
        remediation: "Add the condition {\"Bool\": {\"kms:GrantIsForAWSResource\": \"true\"}} (or pin kms:ViaService) to the statement that allows kms:CreateGrant.",
        references: &[
            "https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-grant-is-for-aws-resource",
        ],
    },
    RuleInfo {
        id: RuleId::Invalid,
        severity: Severity::High,
        title: "Key policy is not valid",
        rationale: "The document does not follow the key policy grammar, so its meaning cannot be judged.",
        remediation: "Correct the document; the message names the problem.",
        references: &[
            "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_grammar.html",
        ],
    },
    RuleInfo {
        id: RuleId::Unreadable,
        severity: Severity::High,
        title: "Key policy could not be read",
        rationale: "Keyward could not read the key policy (for example AccessDenied), so the key is a blind spot.",
        remediation: "Allow Keyward's auditor role kms:GetKeyPolicy and kms:DescribeKey in the key policy.",
        references: &[DEFAULT_POLICY],
    },
    RuleInfo {
        id: RuleId::RotationDisabled,
        severity: Severity::Low,
        title: "Automatic key rotation is off",
        rationale: "A symmetric customer managed key without automatic rotation keeps the same key material indefinitely.",
        remediation: "Enable automatic rotation (EnableKeyRotation).",
        references: &[
            "https://docs.aws.amazon.com/kms/latest/developerguide/rotate-keys.html",
            "CIS AWS Foundations Benchmark v3.0.0, control 3.6 (3.8 in earlier versions)",
            "AWS Security Hub KMS.4",
        ],
    },
    RuleInfo {
        id: RuleId::PendingDeletion,
        severity: Severity::Info,
        title: "Key is scheduled for deletion",
        rationale: "Data encrypted under the key becomes unrecoverable when the waiting period ends.",
        remediation: "Cancel the deletion (CancelKeyDeletion) if the key is still needed.",
        references: &[
            "https://docs.aws.amazon.com/kms/latest/developerguide/deleting-keys.html",
            "AWS Security Hub KMS.3",
        ],
    },
    RuleInfo {
        id: RuleId::IamDecryptAllKeys,
        severity: Severity::Medium,
        title: "An IAM policy allows decryption with every KMS key",
        rationale: "An identity policy allows kms:Decrypt or kms:ReEncryptFrom on Resource \"*\": every key whose policy delegates to IAM can be used by the users and roles it is attached to.",
        remediation: "Limit the statement's Resource to the key ARNs those identities need, and remove the IAM delegation from key policies that should not be reachable this way.",
        references: &[
            "https://docs.aws.amazon.com/kms/latest/developerguide/iam-policies-best-practices.html",
            "AWS Security Hub KMS.1",
            "AWS Security Hub KMS.2",
        ],
    },
];

/// The catalogue entry of a rule.
pub fn info(id: RuleId) -> &'static RuleInfo {
    CATALOGUE
        .iter()
        .find(|r| r.id == id)
        .unwrap_or(&CATALOGUE[0])
}

/// Every entry, in catalogue order.
pub fn all() -> &'static [RuleInfo] {
    &CATALOGUE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_exactly_one_complete_entry_in_order() {
        assert_eq!(CATALOGUE.len(), RuleId::ALL.len());
        for (entry, id) in CATALOGUE.iter().zip(RuleId::ALL) {
            assert_eq!(entry.id, id);
            assert!(!entry.title.is_empty() && !entry.rationale.is_empty());
            assert!(!entry.remediation.is_empty() && !entry.references.is_empty());
        }
    }

    /// The compliance controls auditors map findings to; a renumbering must be a deliberate edit.
    #[test]
    fn control_references_name_their_controls() {
        let refs = |id: RuleId| info(id).references.join(" | ");
        assert!(refs(RuleId::Public).contains("AWS Security Hub KMS.5"));
        assert!(refs(RuleId::RotationDisabled).contains("AWS Security Hub KMS.4"));
        assert!(
            refs(RuleId::RotationDisabled)
                .contains("CIS AWS Foundations Benchmark v3.0.0, control 3.6")
        );
        assert!(refs(RuleId::PendingDeletion).contains("AWS Security Hub KMS.3"));
        assert!(refs(RuleId::IamDecryptAllKeys).contains("AWS Security Hub KMS.1"));
        assert!(refs(RuleId::IamDecryptAllKeys).contains("AWS Security Hub KMS.2"));
        for entry in CATALOGUE.iter() {
            assert!(
                entry
                    .references
                    .iter()
                    .any(|r| r.starts_with("https://docs.aws.amazon.com/")),
                "{} cites no AWS documentation",
                entry.id.as_str()
            );
        }
    }

    #[test]
    fn severities_match_design() {
        use RuleId::*;
        let want = [
            (Delegation, Severity::High),
            (Public, Severity::Critical),
            (CrossAccount, Severity::High),
            (NoAdmin, Severity::Medium),
            (AdminCanUse, Severity::Medium),
            (WildcardAction, Severity::Medium),
            (NotPrincipal, Severity::High),
            (NotAction, Severity::Medium),
            (GrantEscalation, Severity::Medium),
            (Invalid, Severity::High),
            (Unreadable, Severity::High),
            (RotationDisabled, Severity::Low),
            (PendingDeletion, Severity::Info),
            (IamDecryptAllKeys, Severity::Medium),
        ];
        for (id, sev) in want {
            assert_eq!(id.severity(), sev, "{id}");
        }
        assert_eq!("kms-public".parse::<RuleId>(), Ok(Public));
    }
}
