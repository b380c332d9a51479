//! `keyward export`: the stored state as a compliance document, streamed to stdout or a file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{CliError, Exit, ExportArgs, ExportFormat, runtime};
use crate::report::{self, ChannelSink, ReportFormat, ReportOptions};
use crate::store::Store;

/// Runs `keyward export`.
pub fn run(args: &ExportArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    let store = rt.block_on(runtime::open_store(&config))?;
    let format = match args.format {
        ExportFormat::Json => ReportFormat::Json,
        ExportFormat::Csv => ReportFormat::Csv,
        ExportFormat::Ocsf => ReportFormat::Ocsf,
        ExportFormat::Html => ReportFormat::Html,
    };
    let options = ReportOptions {
        include_resolved: args.include_resolved,
        generated_at: chrono::Utc::now(),
    };
    match &args.out {
        Some(path) => {
            // Write beside the target and rename, so a failed export never leaves half a file.
            let tmp = path.with_extension("partial");
            let write_err = |source| CliError::Write {
                path: tmp.clone(),
                source,
            };
            let file = File::create(&tmp).map_err(write_err)?;
            let mut writer = BufWriter::new(file);
            let done = stream(&rt, store, format, options, &mut writer, &write_err)
                .and_then(|()| writer.flush().map_err(write_err))
                .and_then(|()| {
                    std::fs::rename(&tmp, path).map_err(|source| CliError::Write {
                        path: path.clone(),
                        source,
                    })
                });
            if done.is_err() {
                drop(writer);
                let _ = std::fs::remove_file(&tmp);
            }
            done?;
        }
        None => {
            let mut writer = BufWriter::new(out);
            stream(&rt, store, format, options, &mut writer, &CliError::Output)?;
            writer.flush()?;
        }
    }
    Ok(Exit::Clean)
}

/// Runs the export on the runtime and writes its chunks here as they come: the bounded channel
/// keeps at most a few chunks in flight, whatever the size of the export.
fn stream(
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    format: ReportFormat,
    options: ReportOptions,
    writer: &mut dyn Write,
    write_err: &dyn Fn(io::Error) -> CliError,
) -> Result<(), CliError> {
    let (tx, mut rx) = mpsc::channel(4);
    let task = rt.spawn(async move {
        let mut sink = ChannelSink::new(tx);
        report::write_report(store.as_ref(), format, &options, &mut sink).await
    });
    let mut written = Ok(());
    while let Some(chunk) = rx.blocking_recv() {
        if let Ok(chunk) = chunk
            && let Err(e) = writer.write_all(&chunk)
        {
            written = Err(write_err(e));
            break;
        }
    }
    // A failed write closes the channel: the export sees it and stops.
    drop(rx);
    let produced = rt
        .block_on(task)
        .map_err(|e| CliError::Store(format!("the export stopped: {e}")))?;
    written?;
    produced.map_err(|e| CliError::Store(e.to_string()))
}
