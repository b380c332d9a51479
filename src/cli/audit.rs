//! `keyward audit verify`: recompute the audit log's hash chain.

use std::io::Write;

use super::{AuditArgs, CliError, Exit, runtime};

/// Runs `keyward audit verify`; exit 1 when the chain is broken.
pub fn run(args: &AuditArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    let report = rt.block_on(async {
        let store = runtime::open_store(&config).await?;
        store
            .verify_audit()
            .await
            .map_err(|e| CliError::Store(e.to_string()))
    })?;
    match report.first_broken_id {
        None => {
            writeln!(out, "audit log intact: {} entries verified", report.events)?;
            Ok(Exit::Clean)
        }
        Some(id) => {
            writeln!(
                out,
                "audit log BROKEN at entry {id}: {} ({} entries read)",
                report.reason.unwrap_or_default(),
                report.events
            )?;
            Ok(Exit::Findings)
        }
    }
}
