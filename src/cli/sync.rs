//! `keyward sync --once`: one pass over the configured accounts, a summary per account·region.

use std::io::Write;
use std::sync::Arc;

use super::{CliError, Exit, SyncArgs, runtime};
use crate::metrics::Metrics;
use crate::sync::{Due, run_scheduler, summary_line};

/// Runs `keyward sync`.
pub fn run(args: &SyncArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    rt.block_on(async {
        let store = runtime::open_store(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let (service, connector) = runtime::sync_service(&config, store, metrics);
        let targets = runtime::targets(&config, connector.as_ref()).await?;
        if !args.once {
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                super::serve::shutdown_signal().await;
                let _ = tx.send(true);
            });
            run_scheduler(service, targets, config.sync.interval, rx).await;
            return Ok(Exit::Clean);
        }
        let pass = service.run_pass(&targets, args.account.as_deref(), Due::Always);
        tokio::pin!(pass);
        let result = tokio::select! {
            result = &mut pass => result,
            () = super::serve::shutdown_signal() => {
                // Interrupted: stop at once, release the leases and close the runs, so the next
                // `sync --once` (another replica id) need not wait for them to expire.
                let (result, _) = tokio::join!(&mut pass, service.shutdown(std::future::ready(())));
                result
            }
        };
        let reports = result.map_err(|e| CliError::Sync(e.to_string()))?;
        for r in &reports {
            writeln!(out, "{}", summary_line(r))?;
        }
        let failed = reports.iter().filter(|r| r.failed()).count();
        writeln!(
            out,
            "{} account·regions synced, {failed} failed",
            reports.len()
        )?;
        Ok(if failed > 0 {
            Exit::Findings
        } else {
            Exit::Clean
        })
    })
}
