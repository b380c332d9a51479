//! The periodic sync of `keyward serve`: a pass at start, then one every interval with jitter,
//! never two at once; on shutdown an unfinished pass is given a grace period, then abandoned.

use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::{Due, SyncService, Target};

/// How long a pass in flight may take to finish once shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs passes until `shutdown` turns true.
pub async fn run_scheduler(
    service: Arc<SyncService>,
    targets: Vec<Target>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Regions another replica synced within the last interval are not due; the 10 % slack
        // keeps jitter from skipping a region for a whole extra interval.
        let due = Due::After(interval.mul_f64(0.9));
        let pass = service.run_pass(&targets, None, due);
        tokio::pin!(pass);
        tokio::select! {
            result = &mut pass => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "sync pass could not run");
                }
            }
            _ = stop_requested(&mut shutdown) => {
                tracing::info!("shutdown requested: letting the sync pass finish");
                if tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await.is_err() {
                    // Dropping the pass rolls back any open transaction; its leases expire.
                    tracing::warn!("sync pass abandoned at shutdown");
                }
                return;
            }
        }
        let jitter = rand::rng().random_range(-0.1..=0.1);
        let pause = interval.mul_f64(1.0 + jitter);
        tracing::debug!(seconds = pause.as_secs_f64(), "next sync pass scheduled");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop_requested(&mut shutdown) => return,
        }
    }
}

/// Completes once shutdown is requested (or its sender is gone). Returns nothing, so no borrow
/// of the channel is held across the awaits that follow.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
