//! `keyward serve`: the HTTP server and the periodic sync in one process.

use std::sync::Arc;
use tokio::net::TcpListener;

use super::{CliError, Exit, ServeArgs, runtime};
use crate::clock::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::notify::{DeliverySettings, Notifier, Webhook};
use crate::remediation::{RemediationService, SyncAfterApply};
use crate::sync::run_scheduler;
use crate::web::dashboard::DashboardSettings;
use crate::web::{AppState, SyncTrigger, build_app_with, serve};

/// Runs `keyward serve` until SIGINT/SIGTERM.
pub fn run(args: &ServeArgs) -> Result<Exit, CliError> {
    let config = runtime::load_config(args.config.as_deref())?;
    runtime::init_logging(config.log_format);
    let rt = runtime::runtime()?;
    rt.block_on(async {
        let store = runtime::open_store(&config).await?;
        let metrics = Arc::new(Metrics::new());
        if let Ok(stats) = store.stats().await {
            metrics.set_stats(&stats);
        }
        let (service, connector) = runtime::sync_service(&config, store.clone(), metrics.clone());
        let targets = runtime::targets(&config, connector.as_ref()).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
        let bound = listener.local_addr().map_err(CliError::Output)?;
        // Said on stderr even without logging so scripts (and tests binding port 0) can find it.
        eprintln!("keyward: listening on http://{bound}");
        tracing::info!(listen = %bound, accounts = targets.len(), "keyward serving");
        let (tx, rx) = tokio::sync::watch::channel(false);
        let trigger = Arc::new(SyncTrigger::new(service.clone(), targets.clone()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // Events stay in the outbox while no webhook is configured, for the first one to get.
        let notifier = if config.webhooks.is_empty() {
            None
        } else {
            let notifier = Notifier::new(
                store.clone(),
                clock.clone(),
                config.webhooks.iter().map(Webhook::from).collect(),
                DeliverySettings::default(),
            )
            .map_err(|e| CliError::Usage(e.to_string()))?;
            Some(tokio::spawn(notifier.run(rx.clone())))
        };
        let remediation = Arc::new(RemediationService {
            store: store.clone(),
            connector: connector.clone(),
            writers: connector.clone(),
            clock: clock.clone(),
            config: config.remediation.clone(),
            accounts: config.accounts.clone(),
            after_apply: Some(Arc::new(SyncAfterApply {
                service: service.clone(),
                targets: targets.clone(),
            })),
        });
        // Crash safety: settle what a previous process left `applying` (under a claim older than
        // the claim lease), before serving; the periodic task below keeps doing it.
        reconcile_applying(&remediation).await;
        let expiry = tokio::spawn(expire_remediations(remediation.clone(), rx.clone()));
        let scheduler = tokio::spawn(run_scheduler(service, targets, config.sync.interval, rx));
        let app = build_app_with(
            AppState {
                store,
                metrics,
                clock,
                sync: Some(trigger),
                remediation: Some(remediation),
                metrics_public: config.auth.metrics_public,
            },
            DashboardSettings::from_config(&config),
        );
        let served = serve(listener, app, async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = tx.send(true);
        })
        .await;
        if expiry.await.is_err() {
            tracing::error!("the remediation expiry task panicked");
        }
        if scheduler.await.is_err() {
            tracing::error!("the sync scheduler panicked");
        }
        if let Some(notifier) = notifier
            && notifier.await.is_err()
        {
            tracing::error!("the webhook delivery worker panicked");
        }
        served.map_err(CliError::Output)?;
        Ok(Exit::Clean)
    })
}

/// Settles remediations left `applying` under a claim older than the claim lease, and logs it.
async fn reconcile_applying(service: &RemediationService) {
    match service.reconcile_applying().await {
        Ok(settled) if !settled.is_empty() => {
            tracing::info!(
                count = settled.len(),
                "reconciled remediations left applying"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reconciling remediations left applying failed"),
    }
}

/// How often pending and approved remediations past their expiry are expired, remediations
/// left `applying` past their claim lease reconciled, and expired dashboard sessions deleted.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Expires remediations, reconciles abandoned applies and deletes expired dashboard sessions at
/// start-up and then every [`EXPIRY_INTERVAL`] until shutdown.
async fn expire_remediations(
    service: Arc<RemediationService>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match service.expire().await {
            Ok(ids) if !ids.is_empty() => tracing::info!(?ids, "remediations expired"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring remediations failed"),
        }
        // Not only at start-up: a replica that died, or an apply that outlived its lease, leaves
        // rows `applying` while other replicas keep running.
        reconcile_applying(&service).await;
        // Expired sessions are never honoured; this only keeps the table small.
        match service
            .store
            .delete_expired_sessions(service.clock.now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "expired dashboard sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting expired sessions failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_INTERVAL) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
