//! The CLI's errors and the exit codes they map to (DESIGN.md "CLI contract").

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

/// How a command ended, as a process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing to report.
    Clean = 0,
    /// `check` found something.
    Findings = 1,
    /// Bad usage or a file that could not be read.
    Usage = 2,
    /// `fix` refused to rewrite the policy.
    Refused = 3,
}

impl Exit {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments make no sense together.
    #[error("{0}")]
    Usage(String),
    /// A policy file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `check` cannot judge delegation without knowing whose key it is.
    #[error("{}: {}", path.display(), account_problem(accounts))]
    AccountUnknown {
        path: PathBuf,
        /// The accounts whose root the policy names (none, or more than one).
        accounts: Vec<String>,
    },
    /// `fix` would not produce a safe policy.
    #[error("refusing to fix {}: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    /// The configuration is invalid or missing.
    #[error("{0}")]
    Config(String),
    /// The database could not be opened, migrated or read.
    #[error("{0}")]
    Store(String),
    /// AWS could not be reached with the configured credentials.
    #[error("{0}")]
    Aws(String),
    /// A sync pass could not start.
    #[error("{0}")]
    Sync(String),
    /// A command that acts as someone got no API token, or one the store does not accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// The API token's role is below what the command needs.
    #[error(
        "token {name:?} has role {has}; `{command}` needs the {needed} role or higher (as over the API)"
    )]
    RoleTooLow {
        name: String,
        has: String,
        needed: String,
        command: &'static str,
    },
    /// An output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the result failed (a closed pipe, a full disk).
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_)
            | Self::Read { .. }
            | Self::AccountUnknown { .. }
            | Self::Output(_)
            | Self::Config(_)
            | Self::Store(_)
            | Self::Aws(_)
            | Self::Sync(_)
            | Self::Unauthenticated(_)
            | Self::RoleTooLow { .. }
            | Self::Write { .. } => Exit::Usage,
            Self::Refused { .. } => Exit::Refused,
        }
    }
}

fn account_problem(accounts: &[String]) -> String {
    if accounts.is_empty() {
        "the policy names no account root (arn:aws:iam::ACCOUNT:root), so the key's account is unknown; pass --account ID".to_string()
    } else {
        format!(
            "the policy names the root of several accounts ({}), so the key's account is ambiguous; pass --account ID",
            accounts.join(", ")
        )
    }
}
