//! `keyward check`: evaluates key policy files offline and reports the findings as text or JSON.

use serde::Serialize;
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::runtime::load_config;
use super::{CheckArgs, CliError, Exit, Format};
use crate::config::AccountConfig;
use crate::policy::document::PrincipalKind;
use crate::policy::matching::{Arn, is_account_id};
use crate::policy::{EvalContext, Finding, KeyManager, Policy, RuleId, Severity, evaluate};

/// Runs `check` on a file or on every `*.json` file of a directory.
pub(super) fn run(
    args: &CheckArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, CliError> {
    let meta = fs::metadata(&args.policy).map_err(|source| CliError::Read {
        path: args.policy.clone(),
        source,
    })?;
    let config = load_config(args.config.as_deref())?;
    if meta.is_dir() {
        run_dir(args, &config.accounts, out, err)
    } else {
        run_file(args, &config.accounts, out)
    }
}

fn run_file(
    args: &CheckArgs,
    accounts: &[AccountConfig],
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let findings = check_file(&args.policy, args, accounts)?;
    match args.format {
        Format::Json => {
            let doc = FileFindings {
                findings: findings.iter().map(FindingOut::from).collect(),
            };
            write_json(out, &doc)?;
        }
        Format::Text => {
            write_finding_lines(out, &findings)?;
            writeln!(out, "{} in {}", summary(&findings), args.policy.display())?;
        }
    }
    Ok(if findings.is_empty() {
        Exit::Clean
    } else {
        Exit::Findings
    })
}

fn run_dir(
    args: &CheckArgs,
    accounts: &[AccountConfig],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, CliError> {
    let dir = &args.policy;
    let files = policy_files(dir)?;
    if files.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: the directory holds no *.json files to check",
            dir.display()
        )));
    }
    let mut reports = Vec::with_capacity(files.len());
    for path in files {
        let outcome = check_file(&path, args, accounts);
        if let Err(e) = &outcome {
            writeln!(err, "keyward: {e}")?;
        }
        if args.format == Format::Text {
            match &outcome {
                Ok(findings) => {
                    write_finding_lines(out, findings)?;
                    writeln!(out, "{} in {}", summary(findings), path.display())?;
                }
                Err(_) => writeln!(out, "could not check {}", path.display())?,
            }
        }
        reports.push((path, outcome));
    }
    let failed = reports.iter().filter(|(_, o)| o.is_err()).count();
    let all_findings: Vec<&Finding> = reports
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .flatten()
        .collect();
    match args.format {
        Format::Json => {
            let files = reports
                .iter()
                .map(|(path, outcome)| match outcome {
                    Ok(findings) => DirEntryOut {
                        path: path.display().to_string(),
                        findings: Some(findings.iter().map(FindingOut::from).collect()),
                        error: None,
                    },
                    Err(e) => DirEntryOut {
                        path: path.display().to_string(),
                        findings: None,
                        error: Some(e.to_string()),
                    },
                })
                .collect();
            write_json(out, &DirFindings { files })?;
        }
        Format::Text => {
            let mut line = format!(
                "total: {} in {} in {}",
                summary(&all_findings),
                plural(reports.len() - failed, "file"),
                dir.display()
            );
            if failed > 0 {
                line.push_str(&format!(
                    "; {} could not be checked",
                    plural(failed, "file")
                ));
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(if failed > 0 {
        Exit::Usage
    } else if all_findings.is_empty() {
        Exit::Clean
    } else {
        Exit::Findings
    })
}

/// The `*.json` entries of `dir`, sorted, not descending into subdirectories.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let read_err = |source| CliError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Evaluates one file. An error means the file was not judged at all (it could not be read, or
/// its account is unknown); a document that is not a key policy is a KMS-INVALID finding.
///
/// The text goes through [`evaluate`], the same reader the sync uses; the lossless parse is
/// only needed to work out the account when `--account` is not given.
fn check_file(
    path: &Path,
    args: &CheckArgs,
    accounts: &[AccountConfig],
) -> Result<Vec<Finding>, CliError> {
    let bytes = fs::read(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(vec![not_utf8()]);
    };
    let account = match &args.account {
        Some(account) => account.clone(),
        None => match Policy::parse(&text) {
            // Only KMS-INVALID is judged, and it does not depend on the account.
            Err(_) => String::new(),
            Ok(policy) => match root_accounts(&policy) {
                found if found.len() == 1 => found.into_iter().next().unwrap_or_default(),
                // AWS-managed key policies are not judged, so whose key it is does not matter.
                _ if args.key_manager == KeyManager::Aws => String::new(),
                found => {
                    return Err(CliError::AccountUnknown {
                        path: path.to_path_buf(),
                        accounts: found,
                    });
                }
            },
        },
    };
    let mut trusted = args.trusted_accounts.clone();
    if let Some(configured) = accounts.iter().find(|a| a.id == account) {
        for id in &configured.trusted_accounts {
            if !trusted.contains(id) {
                trusted.push(id.clone());
            }
        }
    }
    Ok(evaluate(
        &text,
        &EvalContext {
            account_id: &account,
            key_manager: args.key_manager,
            trusted_accounts: &trusted,
        },
    ))
}

/// The accounts whose root (`arn:<partition>:iam::ACCOUNT:root`) any statement names as an AWS
/// principal, in `Principal` or `NotPrincipal`: the key's own account is normally the only one.
fn root_accounts(policy: &Policy) -> Vec<String> {
    let mut accounts = BTreeSet::new();
    for st in policy.statements() {
        for value in st.principals.of_kind(PrincipalKind::Aws) {
            if let Some(arn) = Arn::parse(value)
                && arn.partition.starts_with("aws")
                && arn.service == "iam"
                && arn.region.is_empty()
                && arn.resource == "root"
                && is_account_id(arn.account)
            {
                accounts.insert(arn.account.to_string());
            }
        }
    }
    accounts.into_iter().collect()
}

/// A policy file that is not UTF-8 text cannot be JSON, so it is no key policy.
fn not_utf8() -> Finding {
    Finding {
        rule_id: RuleId::Invalid,
        severity: RuleId::Invalid.severity(),
        statement_index: None,
        sid: None,
        message: "The key policy is not valid: not JSON: the file is not UTF-8 text.".to_string(),
        locator: "key".to_string(),
    }
}

/// One finding in the JSON output: exactly these keys, a public contract.
#[derive(Serialize)]
struct FindingOut<'a> {
    rule_id: &'static str,
    severity: &'static str,
    statement_index: Option<usize>,
    sid: Option<&'a str>,
    message: &'a str,
}

impl<'a> From<&'a Finding> for FindingOut<'a> {
    fn from(f: &'a Finding) -> Self {
        FindingOut {
            rule_id: f.rule_id.as_str(),
            severity: f.severity.as_str(),
            statement_index: f.statement_index,
            sid: f.sid.as_deref(),
            message: &f.message,
        }
    }
}

#[derive(Serialize)]
struct FileFindings<'a> {
    findings: Vec<FindingOut<'a>>,
}

/// A file of a checked directory: its findings, or why it could not be checked. `findings` is
/// always present (`null` for a file that could not be checked), so every entry has the
/// contract's `path` and `findings` keys and an unchecked file never reads as a clean one.
#[derive(Serialize)]
struct DirEntryOut<'a> {
    path: String,
    findings: Option<Vec<FindingOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct DirFindings<'a> {
    files: Vec<DirEntryOut<'a>>,
}

fn write_json(out: &mut dyn Write, doc: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// One aligned line per finding: severity, rule id, statement, message.
fn write_finding_lines(out: &mut dyn Write, findings: &[Finding]) -> Result<(), CliError> {
    // `check` reads key policies only, so the account-level IAM rule never appears here.
    let id_width = RuleId::ALL
        .iter()
        .filter(|id| **id != RuleId::IamDecryptAllKeys)
        .map(|id| id.as_str().len())
        .max()
        .unwrap_or(0);
    for f in findings {
        let label = statement_label(f);
        writeln!(
            out,
            "{:<8}  {:<id_width$}  {label}: {}",
            f.severity.as_str().to_ascii_uppercase(),
            f.rule_id.as_str(),
            without_label(&f.message, &label)
        )?;
    }
    Ok(())
}

fn statement_label(f: &Finding) -> String {
    match (f.statement_index, f.sid.as_deref()) {
        (Some(i), Some(sid)) if !sid.is_empty() => format!("statement {i} (\"{sid}\")"),
        (Some(i), _) => format!("statement {i}"),
        (None, _) => "policy".to_string(),
    }
}

/// Messages often open with the statement label the line already shows; say it once.
fn without_label<'m>(message: &'m str, label: &str) -> &'m str {
    match message.get(..label.len()) {
        Some(head) if head.eq_ignore_ascii_case(label) => message[label.len()..].trim_start(),
        _ => message,
    }
}

/// `no findings` or `3 findings (1 high, 2 medium)`, most severe first.
fn summary<F: Borrow<Finding>>(findings: &[F]) -> String {
    if findings.is_empty() {
        return "no findings".to_string();
    }
    let severities = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];
    let counts: Vec<String> = severities
        .iter()
        .filter_map(|&sev| {
            let n = findings
                .iter()
                .filter(|f| Borrow::<Finding>::borrow(*f).severity == sev)
                .count();
            (n > 0).then(|| format!("{n} {sev}"))
        })
        .collect();
    format!(
        "{} ({})",
        plural(findings.len(), "finding"),
        counts.join(", ")
    )
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule_id: RuleId, statement_index: Option<usize>, sid: Option<&str>) -> Finding {
        Finding {
            rule_id,
            severity: rule_id.severity(),
            statement_index,
            sid: sid.map(str::to_string),
            message: "m".to_string(),
            locator: "key".to_string(),
        }
    }

    #[test]
    fn summary_counts_by_severity_most_severe_first() {
        assert_eq!(summary::<Finding>(&[]), "no findings");
        let one = [finding(RuleId::NoAdmin, None, None)];
        assert_eq!(summary(&one), "1 finding (1 medium)");
        let three = [
            finding(RuleId::NoAdmin, None, None),
            finding(RuleId::Delegation, Some(0), None),
            finding(RuleId::Public, Some(1), None),
        ];
        assert_eq!(summary(&three), "3 findings (1 critical, 1 high, 1 medium)");
    }

    #[test]
    fn labels_name_index_and_sid() {
        assert_eq!(
            statement_label(&finding(RuleId::Delegation, Some(0), Some("Root"))),
            "statement 0 (\"Root\")"
        );
        assert_eq!(
            statement_label(&finding(RuleId::Delegation, Some(2), Some(""))),
            "statement 2"
        );
        assert_eq!(
            statement_label(&finding(RuleId::NoAdmin, None, None)),
            "policy"
        );
    }

    #[test]
    fn text_lines_do_not_repeat_the_label() {
        let label = "statement 0 (\"Root\")";
        assert_eq!(
            without_label("Statement 0 (\"Root\") allows kms:*.", label),
            "allows kms:*."
        );
        assert_eq!(
            without_label("Admin can use it.", label),
            "Admin can use it."
        );
        assert_eq!(without_label("short", label), "short");
    }

    #[test]
    fn root_accounts_reads_principal_and_not_principal_in_any_partition() {
        let text = r#"{"Statement":[
            {"Effect":"Allow","Principal":{"AWS":["arn:aws-cn:iam::111122223333:root","arn:aws:iam::111122223333:role/root"]},"Action":"kms:*","Resource":"*"},
            {"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:*","Resource":"*"},
            {"Effect":"Allow","Principal":{"AWS":["777788889999","arn:aws:iam::*:root"]},"Action":"kms:Decrypt","Resource":"*"}
        ]}"#;
        let policy = Policy::parse(text).expect("valid policy");
        assert_eq!(root_accounts(&policy), ["111122223333", "444455556666"]);
    }
}
