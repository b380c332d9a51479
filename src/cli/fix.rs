//! `keyward fix`: prints a key policy with IAM delegation removed, or why Keyward refuses to.

use std::fs;
use std::io::Write;

use super::runtime::load_config;
use super::{CliError, Exit, FixArgs};
use crate::policy::Policy;
use crate::policy::diff::diff;
use crate::policy::fix::{FixContext, FixOutcome, fix};

/// Runs `fix`: the policy on stdout (pure JSON), what changed on stderr.
pub(super) fn run(
    args: &FixArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, CliError> {
    let path = &args.policy;
    let bytes = fs::read(path).map_err(|source| CliError::Read {
        path: path.clone(),
        source,
    })?;
    let refused = |reason: String| CliError::Refused {
        path: path.clone(),
        reason,
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| refused("the key policy is not valid: the file is not UTF-8 text".into()))?;
    let policy =
        Policy::parse(&text).map_err(|e| refused(format!("the key policy is not valid: {e}")))?;
    let config = load_config(args.config.as_deref())?;
    let account = config.accounts.iter().find(|a| a.id == args.account);
    // Flags win; the account's configuration fills what they leave out, as the server would.
    let admins = match account {
        Some(a) if args.admins.is_empty() => &a.key_admins,
        _ => &args.admins,
    };
    let ctx = FixContext {
        account_id: &args.account,
        key_admins: admins,
        auditor: args
            .auditor
            .as_deref()
            .or(account.and_then(|a| a.auditor.as_deref())),
        caller: args
            .caller
            .as_deref()
            .or(account.and_then(|a| a.remediator.as_deref())),
    };
    match fix(&policy, &ctx).map_err(|e| refused(e.reason))? {
        FixOutcome::Unchanged => {
            writeln!(
                err,
                "keyward: {} needs no change; printing it as it is",
                path.display()
            )?;
            // Verbatim, so the output can be compared byte for byte with the input.
            out.write_all(text.as_bytes())?;
        }
        FixOutcome::Fixed(fixed) => {
            for change in &fixed.changes {
                writeln!(err, "keyward: {change}")?;
            }
            if args.diff {
                err.write_all(diff(&policy, &fixed.policy).render_text().as_bytes())?;
            }
            out.write_all(fixed.text.as_bytes())?;
            if !fixed.text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(Exit::Clean)
}
