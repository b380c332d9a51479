//! The `keyward` command line: argument parsing, the offline commands `check` and `fix`, and
//! the commands that work on the configured accounts and database.

mod audit;
mod check;
mod error;
mod export;
mod fix;
mod migrate;
mod remediation;
mod runtime;
mod serve;
mod sync;
mod token;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::policy::KeyManager;
use crate::policy::matching::is_account_id;

pub use error::{CliError, Exit};

/// Keeps IAM out of AWS KMS keys.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate key policy files against the rule catalogue.
    ///
    /// Exit status: 0 no findings, 1 findings, 2 usage error or unreadable file.
    Check(CheckArgs),
    /// Print the policy with IAM delegation removed (the AWS-recommended root statement).
    ///
    /// Exit status: 0 printed, 2 usage error or unreadable file, 3 fix refused.
    Fix(FixArgs),
    /// Run the HTTP server and the periodic sync.
    Serve(ServeArgs),
    /// Sync every configured account·region into the database.
    ///
    /// Exit status: 0 all synced, 1 some account·region failed, 2 configuration or database error.
    Sync(SyncArgs),
    /// Export the stored state as a compliance document.
    Export(ExportArgs),
    /// Create the database if needed and apply pending migrations.
    Migrate(MigrateArgs),
    /// Manage API tokens (the secret is printed once, only its hash is stored).
    Token(TokenArgs),
    /// Check the audit log.
    ///
    /// Exit status: 0 intact, 1 broken, 2 configuration or database error.
    Audit(AuditArgs),
    /// Propose, approve, reject and apply key policy remediations, as the API token given with
    /// --token or KEYWARD_TOKEN (list and show need none).
    ///
    /// Exit status: 0 done, 1 apply ended stale or failed, 2 refused, forbidden, no valid token
    /// or an error.
    Remediation(RemediationArgs),
}

/// Arguments of `keyward remediation`.
#[derive(Debug, Args)]
pub struct RemediationArgs {
    #[command(subcommand)]
    pub command: RemediationCommand,
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// API token to act as (propose: operator; approve, reject, apply: approver) [default: the
    /// KEYWARD_TOKEN environment variable, which keeps it out of the process list].
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
}

/// `keyward remediation` subcommands.
#[derive(Debug, Subcommand)]
pub enum RemediationCommand {
    /// List remediations, newest first: id, state, key, requester, ticket.
    List,
    /// Show one remediation with its proposed policy.
    Show {
        /// The remediation id.
        id: i64,
    },
    /// Propose the fix for a key, read fresh from AWS.
    Propose {
        /// Key id or ARN.
        #[arg(long)]
        key: String,
        /// A ticket reference carried by the notifications.
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Approve (never one's own proposal).
    Approve {
        id: i64,
        #[arg(long)]
        comment: Option<String>,
        /// Confirm that the principals the fix takes cryptographic access from (see `show`)
        /// no longer need the key.
        #[arg(long)]
        acknowledge_access_loss: bool,
    },
    /// Reject, with a required comment.
    Reject {
        id: i64,
        #[arg(long)]
        comment: String,
    },
    /// Apply an approved remediation (needs `[remediation] mode = "apply"`).
    Apply { id: i64 },
}

/// Arguments of `keyward token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

/// `keyward token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret once.
    Create {
        /// A unique name: the audit log shows it as the actor.
        #[arg(long)]
        name: String,
        /// viewer, operator, approver or admin.
        #[arg(long, value_parser = ["viewer", "operator", "approver", "admin"])]
        role: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Arguments of `keyward audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

/// `keyward audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit log.
    Verify,
}

/// Arguments of `keyward serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `keyward sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Run one pass, print a summary per account·region and exit; without it, sync every interval.
    #[arg(long)]
    pub once: bool,
    /// Only this configured account.
    #[arg(long, value_name = "ID", value_parser = parse_account_id, requires = "once")]
    pub account: Option<String>,
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `keyward export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Document format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
    pub format: ExportFormat,
    /// Include resolved findings.
    #[arg(long)]
    pub include_resolved: bool,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Keys, findings and a summary as one JSON document.
    Json,
    /// One row per finding (RFC 4180, UTF-8, safe to open in spreadsheets).
    Csv,
    /// A JSON array of OCSF 1.1 Compliance Findings (class 2003).
    Ocsf,
    /// A self-contained printable HTML report.
    Html,
}

/// Arguments of `keyward migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Configuration file [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `keyward check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A key policy JSON file, or a directory whose `*.json` files are each checked.
    #[arg(long, value_name = "FILE|DIR")]
    pub policy: PathBuf,
    /// The AWS account that owns the key [default: the account of the only
    /// `arn:aws:iam::ACCOUNT:root` principal in the policy].
    #[arg(long, value_name = "ID", value_parser = parse_account_id)]
    pub account: Option<String>,
    /// Who manages the key; AWS-managed keys are never reported (only invalid documents are).
    #[arg(long, value_name = "CUSTOMER|AWS", default_value = "CUSTOMER", value_parser = parse_key_manager)]
    pub key_manager: KeyManager,
    /// An external account the key may be shared with (repeatable).
    #[arg(long = "trusted-account", value_name = "ID", value_parser = parse_account_id)]
    pub trusted_accounts: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Configuration file: the key's account's `trusted_accounts` are added to
    /// `--trusted-account` [default: ./keyward.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `keyward fix`.
#[derive(Debug, Args)]
pub struct FixArgs {
    /// The key policy JSON file to fix.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// The AWS account that owns the key.
    #[arg(long, value_name = "ID", value_parser = parse_account_id)]
    pub account: String,
    /// An IAM role or user ARN to name as key administrator when the policy has none (repeatable).
    #[arg(long = "admin", value_name = "ARN", value_parser = parse_arn)]
    pub admins: Vec<String>,
    /// Keyward's own principal in the account: it keeps read access to the key.
    #[arg(long, value_name = "ARN", value_parser = parse_arn)]
    pub auditor: Option<String>,
    /// The principal that will submit the policy (an assumed-role session is converted to its
    /// role): it keeps kms:PutKeyPolicy.
    #[arg(long, value_name = "ARN", value_parser = parse_arn)]
    pub caller: Option<String>,
    /// Also print a statement-by-statement diff of the change on stderr.
    #[arg(long)]
    pub diff: bool,
    /// Configuration file: the account's `key_admins`, `auditor` and `remediator` are used
    /// where `--admin`, `--auditor` and `--caller` are not given [default: ./keyward.toml when
    /// present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How `check` prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per finding and a summary, for a person.
    Text,
    /// One JSON document, for programs.
    Json,
}

fn parse_account_id(s: &str) -> Result<String, String> {
    if is_account_id(s) {
        Ok(s.to_string())
    } else {
        Err("an AWS account id is exactly 12 digits".to_string())
    }
}

fn parse_key_manager(s: &str) -> Result<KeyManager, String> {
    s.parse()
}

fn parse_arn(s: &str) -> Result<String, String> {
    match crate::policy::matching::Arn::parse(s) {
        Some(arn) if !arn.account.is_empty() && !arn.resource.is_empty() => Ok(s.to_string()),
        _ => Err("expected an ARN such as arn:aws:iam::111122223333:role/KMSAdmin".to_string()),
    }
}

/// Runs the process: parses `std::env::args_os` and writes to the real stdout and stderr.
pub fn main() -> ExitCode {
    // Unlocked handles: holding stderr's lock for the whole run would deadlock every log line
    // written from another thread (the server and the sync log from worker threads).
    let code = run(std::env::args_os(), &mut io::stdout(), &mut io::stderr());
    ExitCode::from(code)
}

/// Parses `args` (program name first), runs the command, and returns the exit code. Results go
/// to `out`, diagnostics to `err`.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that go to stdout and exit 0.
            let text = e.render().to_string();
            let target: &mut dyn Write = if e.use_stderr() { err } else { out };
            let _ = target.write_all(text.as_bytes());
            return u8::try_from(e.exit_code()).unwrap_or(Exit::Usage.code());
        }
    };
    let result = match &cli.command {
        Command::Check(args) => check::run(args, out, err),
        Command::Fix(args) => fix::run(args, out, err),
        Command::Serve(args) => serve::run(args),
        Command::Sync(args) => sync::run(args, out),
        Command::Export(args) => export::run(args, out),
        Command::Migrate(args) => migrate::run(args, out),
        Command::Token(args) => token::run(args, out),
        Command::Audit(args) => audit::run(args, out),
        Command::Remediation(args) => remediation::run(args, out),
    };
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            let _ = writeln!(err, "keyward: {e}");
            e.exit()
        }
    };
    if out.flush().is_err() && exit == Exit::Clean {
        return Exit::Usage.code();
    }
    exit.code()
}
