//! `keyward export`: the stored state as a compliance document.

use std::io::Write;

use super::{CliError, Exit, ExportArgs, runtime};
use crate::report;

/// Runs `keyward export`.
pub fn run(args: &ExportArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    let document = rt.block_on(async {
        let store = runtime::open_store(&config).await?;
        report::json_export(store.as_ref(), args.include_resolved, chrono::Utc::now())
            .await
            .map_err(|e| CliError::Store(e.to_string()))
    })?;
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    match &args.out {
        Some(path) => {
            // Write beside the target and rename, so a failed export never leaves half a file.
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, format!("{text}\n")).map_err(|source| CliError::Write {
                path: tmp.clone(),
                source,
            })?;
            std::fs::rename(&tmp, path).map_err(|source| CliError::Write {
                path: path.clone(),
                source,
            })?;
        }
        None => writeln!(out, "{text}")?,
    }
    Ok(Exit::Clean)
}
