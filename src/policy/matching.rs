//! Wildcard matching and ARN/account parsing, the vocabulary every rule is written in.

/// Glob match with `*` (any run) and `?` (one character), as IAM uses for actions and `…Like`.
pub fn glob_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        glob_bytes(pattern.as_bytes(), text.as_bytes(), ignore_case)
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob_generic(&p, &t, |a, b| {
            if ignore_case {
                a.to_lowercase().eq(b.to_lowercase())
            } else {
                a == b
            }
        })
    }
}

fn glob_bytes(p: &[u8], t: &[u8], ignore_case: bool) -> bool {
    glob_generic(p, t, |a, b| {
        if ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    })
}

/// Iterative glob with single-star backtracking: linear in practice, never exponential.
fn glob_generic<T, F>(p: &[T], t: &[T], eq: F) -> bool
where
    T: Copy + GlobChar,
    F: Fn(&T, &T) -> bool,
{
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi].is_star() {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi].is_question() || eq(&p[pi], &t[ti])) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi].is_star() {
        pi += 1;
    }
    pi == p.len()
}

trait GlobChar {
    fn is_star(&self) -> bool;
    fn is_question(&self) -> bool;
}

impl GlobChar for u8 {
    fn is_star(&self) -> bool {
        *self == b'*'
    }
    fn is_question(&self) -> bool {
        *self == b'?'
    }
}

impl GlobChar for char {
    fn is_star(&self) -> bool {
        *self == '*'
    }
    fn is_question(&self) -> bool {
        *self == '?'
    }
}

/// True when an IAM action pattern (`kms:Create*`, `*`) covers `action`; case-insensitive.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob_match(pattern, action, true)
}

/// True for a string that contains a glob wildcard.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// True for exactly twelve ASCII digits: the only shape an AWS account id has.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The six colon-separated fields of an ARN; the resource keeps any further colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits `arn:partition:service:region:account:resource`; `None` for anything else.
    pub fn parse(s: &'a str) -> Option<Self> {
        // Every rule parses principal ARNs, so this avoids the generic `splitn` machinery: ARNs
        // are short, and a byte scan for the ASCII ':' always splits on a char boundary.
        fn field(s: &str) -> Option<(&str, &str)> {
            let colon = s.bytes().position(|b| b == b':')?;
            Some((&s[..colon], &s[colon + 1..]))
        }
        let rest = s.strip_prefix("arn:")?;
        let (partition, rest) = field(rest)?;
        let (service, rest) = field(rest)?;
        let (region, rest) = field(rest)?;
        let (account, resource) = field(rest)?;
        Some(Arn {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

/// True when `value` is the account principal of `account_id`: its root ARN in any partition,
/// or the bare account id. `arn:aws:iam::ID:role/root` is a role, not the account.
pub fn is_account_principal(value: &str, account_id: &str) -> bool {
    if value == account_id {
        return is_account_id(value);
    }
    is_root_arn_of(value, account_id)
}

/// True for `arn:<aws partition>:iam::<account_id>:root`.
pub fn is_root_arn_of(value: &str, account_id: &str) -> bool {
    match Arn::parse(value) {
        Some(arn) => {
            arn.partition.starts_with("aws")
                && arn.service == "iam"
                && arn.region.is_empty()
                && arn.account == account_id
                && arn.resource == "root"
        }
        None => false,
    }
}

/// The account an `AWS` principal entry belongs to: a bare id, or the account of an IAM/STS ARN.
pub fn principal_account(value: &str) -> Option<&str> {
    if is_account_id(value) {
        return Some(value);
    }
    let arn = Arn::parse(value)?;
    if arn.service == "iam" || arn.service == "sts" {
        Some(arn.account)
    } else {
        None
    }
}

/// True for an `AWS` principal entry that admits everyone: `*` or an ARN with a wildcard account
/// (`*` or `?`: either way the account is not pinned, and KMS-CROSS-ACCOUNT skips it).
pub fn is_public_aws_principal(value: &str) -> bool {
    value == "*" || Arn::parse(value).is_some_and(|arn| has_wildcard(arn.account))
}

/// An IAM user, an IAM role or an STS assumed-role session of `account_id`: who can be an
/// administrator of a key once IAM delegation is gone.
pub fn is_iam_identity_of(value: &str, account_id: &str) -> bool {
    let Some(arn) = Arn::parse(value) else {
        return false;
    };
    if !arn.partition.starts_with("aws") || arn.account != account_id || !arn.region.is_empty() {
        return false;
    }
    match arn.service {
        "iam" => arn.resource.starts_with("user/") || arn.resource.starts_with("role/"),
        "sts" => arn.resource.starts_with("assumed-role/"),
        _ => false,
    }
}

/// Key policies must name the role, not the STS session Keyward runs as: converts
/// `arn:aws:sts::ID:assumed-role/NAME/SESSION` to `arn:aws:iam::ID:role/NAME`; other ARNs pass
/// through. STS hides a role's path, so a role with a path must be configured explicitly.
pub fn session_to_role_arn(value: &str) -> String {
    if let Some(arn) = Arn::parse(value)
        && arn.service == "sts"
        && let Some(rest) = arn.resource.strip_prefix("assumed-role/")
    {
        let name = rest.split('/').next().unwrap_or(rest);
        return format!("arn:{}:iam::{}:role/{}", arn.partition, arn.account, name);
    }
    value.to_string()
}

/// The account principal ARN of `account_id` in the commercial partition.
pub fn root_arn(account_id: &str) -> String {
    format!("arn:aws:iam::{account_id}:root")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_iam() {
        let cases = [
            ("kms:*", "kms:Decrypt", true, true),
            ("KMS:decrypt", "kms:Decrypt", true, true),
            ("kms:Create*", "kms:CreateGrant", true, true),
            ("kms:Create*", "kms:createalias", true, true),
            ("kms:Create*", "kms:PutKeyPolicy", true, false),
            ("*", "kms:Decrypt", true, true),
            ("kms:?ecrypt", "kms:Decrypt", true, true),
            ("kms:?ecrypt", "kms:Decryp", true, false),
            ("kms:*Key*", "kms:ScheduleKeyDeletion", true, true),
            ("", "", true, true),
            ("", "x", true, false),
            ("**", "", true, true),
            ("a*b*c", "abxbc", true, true),
            ("a*b*c", "abxbd", true, false),
            ("Acc*", "Account", false, true),
            ("acc*", "Account", false, false),
            ("A*", "AssumedRole", false, true),
            ("ü*", "üx", false, true),
            ("Ü*", "üx", true, true),
        ];
        for (p, t, ci, want) in cases {
            assert_eq!(glob_match(p, t, ci), want, "{p} vs {t} (ci={ci})");
        }
    }

    #[test]
    fn glob_does_not_blow_up_on_many_stars() {
        let p = "*a".repeat(40);
        let t = "a".repeat(39);
        assert!(!glob_match(&p, &t, false));
    }

    #[test]
    fn account_principal_forms() {
        let id = "111122223333";
        assert!(is_account_principal("arn:aws:iam::111122223333:root", id));
        assert!(is_account_principal(
            "arn:aws-cn:iam::111122223333:root",
            id
        ));
        assert!(is_account_principal(
            "arn:aws-us-gov:iam::111122223333:root",
            id
        ));
        assert!(is_account_principal("111122223333", id));
        assert!(!is_account_principal(
            "arn:aws:iam::111122223333:role/root",
            id
        ));
        assert!(!is_account_principal("arn:aws:iam::444455556666:root", id));
        assert!(!is_account_principal("444455556666", id));
        assert!(!is_account_principal(
            "arn:aws:iam:us-east-1:111122223333:root",
            id
        ));
    }

    #[test]
    fn arn_fields() {
        let arn = Arn::parse("arn:aws:iam::111122223333:role/a:b").unwrap();
        assert_eq!(
            (arn.partition, arn.service, arn.region, arn.account),
            ("aws", "iam", "", "111122223333")
        );
        assert_eq!(arn.resource, "role/a:b");
        assert_eq!(Arn::parse("arn:::::").map(|a| a.resource), Some(""));
        for not_arn in [
            "",
            "arn",
            "arn:",
            "arn:aws:iam::1",
            "ARN:aws:iam::1:root",
            "x:aws:iam::1:r",
        ] {
            assert_eq!(Arn::parse(not_arn), None, "{not_arn}");
        }
    }

    #[test]
    fn principal_accounts() {
        assert_eq!(principal_account("444455556666"), Some("444455556666"));
        assert_eq!(
            principal_account("arn:aws:sts::444455556666:assumed-role/R/s"),
            Some("444455556666")
        );
        assert_eq!(principal_account("arn:aws:iam::*:root"), Some("*"));
        assert_eq!(principal_account("AROAEXAMPLEID"), None);
        assert_eq!(principal_account("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn public_aws_principals() {
        assert!(is_public_aws_principal("*"));
        assert!(is_public_aws_principal("arn:aws:iam::*:root"));
        assert!(is_public_aws_principal("arn:aws:iam::12345678901*:role/x"));
        assert!(is_public_aws_principal("arn:aws:iam::11112222333?:root"));
        assert!(!is_public_aws_principal("arn:aws:iam::111122223333:role/*"));
    }

    #[test]
    fn identities_and_sessions() {
        let id = "111122223333";
        assert!(is_iam_identity_of(
            "arn:aws:iam::111122223333:role/Admin",
            id
        ));
        assert!(is_iam_identity_of(
            "arn:aws:iam::111122223333:user/alice",
            id
        ));
        assert!(is_iam_identity_of(
            "arn:aws:sts::111122223333:assumed-role/Admin/s",
            id
        ));
        assert!(!is_iam_identity_of("arn:aws:iam::111122223333:root", id));
        assert!(!is_iam_identity_of("arn:aws:iam::111122223333:group/g", id));
        assert!(!is_iam_identity_of(
            "arn:aws:iam::444455556666:role/Admin",
            id
        ));
        assert_eq!(
            session_to_role_arn("arn:aws:sts::111122223333:assumed-role/Keyward/i-123"),
            "arn:aws:iam::111122223333:role/Keyward"
        );
        assert_eq!(
            session_to_role_arn("arn:aws:iam::111122223333:role/a/b"),
            "arn:aws:iam::111122223333:role/a/b"
        );
    }
}
