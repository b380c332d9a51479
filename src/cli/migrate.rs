//! `keyward migrate`: create the database if needed and apply pending migrations.

use std::io::Write;

use super::{CliError, Exit, MigrateArgs, runtime};

/// Runs `keyward migrate`.
pub fn run(args: &MigrateArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    rt.block_on(runtime::open_store(&config))?;
    writeln!(out, "database is up to date")?;
    Ok(Exit::Clean)
}
