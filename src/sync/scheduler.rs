//! The periodic sync of `keyward serve`: a pass at start, then one every interval with jitter,
//! never two at once; on shutdown an unfinished pass is given a grace period, then abandoned
//! with its leases released.

use async_trait::async_trait;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::{Due, SyncError, SyncService, Target};

/// How long a pass in flight may take to finish once shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The most the pause between passes strays from the interval, either way (a fraction of it):
/// replicas started together drift apart instead of claiming in lockstep.
pub const JITTER: f64 = 0.1;

/// How the scheduler waits: the pause between passes and the shutdown grace. Tests substitute
/// one that records each wait and decides when it ends.
#[async_trait]
pub trait Sleeper: Send + Sync {
    async fn sleep(&self, duration: Duration);
}

/// Waits on tokio's timer.
pub struct TokioSleeper;

#[async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Runs passes until `shutdown` turns true.
pub async fn run_scheduler(
    service: Arc<SyncService>,
    targets: Vec<Target>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) {
    run_scheduler_with(service, targets, interval, shutdown, &TokioSleeper).await;
}

/// [`run_scheduler`] waiting through `sleeper`.
pub async fn run_scheduler_with(
    service: Arc<SyncService>,
    targets: Vec<Target>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    sleeper: &dyn Sleeper,
) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Regions another replica synced within the last interval are not due; the slack keeps
        // jitter from skipping a region for a whole extra interval.
        let due = Due::After(interval.mul_f64(1.0 - JITTER));
        let pass = service.run_pass(&targets, None, due);
        tokio::pin!(pass);
        tokio::select! {
            result = &mut pass => log_pass(result),
            _ = stop_requested(&mut shutdown) => {
                tracing::info!("shutdown requested: letting the sync pass finish");
                // The pass goes on being polled while shutdown waits: after the grace it is
                // told to stop, releases its leases and returns.
                let (result, _) = tokio::join!(&mut pass, service.shutdown(sleeper.sleep(SHUTDOWN_GRACE)));
                log_pass(result);
                return;
            }
        }
        let jitter = rand::rng().random_range(-JITTER..=JITTER);
        let pause = interval.mul_f64(1.0 + jitter);
        tracing::debug!(seconds = pause.as_secs_f64(), "next sync pass scheduled");
        tokio::select! {
            () = sleeper.sleep(pause) => {}
            _ = stop_requested(&mut shutdown) => break,
        }
    }
    // Between passes: a pass started elsewhere in the process (the API's trigger) gets the grace.
    service.shutdown(sleeper.sleep(SHUTDOWN_GRACE)).await;
}

fn log_pass(result: Result<Vec<super::RegionReport>, SyncError>) {
    match result {
        Ok(_) => {}
        Err(SyncError::Abandoned) => tracing::warn!("sync pass abandoned at shutdown"),
        Err(SyncError::ShuttingDown) => {}
        Err(e) => tracing::error!(error = %e, "sync pass could not run"),
    }
}

/// Completes once shutdown is requested (or its sender is gone). Returns nothing, so no borrow
/// of the channel is held across the awaits that follow.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
