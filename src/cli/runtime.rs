//! What the online commands share: configuration, logging, the async runtime, the services.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use crate::aws::{KmsConnector, SdkConnector};
use crate::clock::SystemClock;
use crate::config::{Config, LogFormat};
use crate::metrics::Metrics;
use crate::store::{self, Store};
use crate::sync::SyncService;

/// Loads the configuration (`--config`, else `./keyward.toml` if present, then `KEYWARD_*`).
pub fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError::Config(e.to_string()))
}

/// Logs to stderr (stdout carries command output); `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("keyward=info,warn"));
    // Colour only for a person at a terminal; log files and pipelines get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests run commands in-process) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A multi-threaded Tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Output)
}

/// Opens the configured database, creating and migrating it as needed.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    store::connect(&config.database_url)
        .await
        .map_err(|e| CliError::Store(e.to_string()))
}

/// The sync service over the real AWS SDK, and its connector: remediation writes through the
/// same one, so each account's credentials are loaded and checked once.
pub fn sync_service(
    config: &Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> (Arc<SyncService>, Arc<SdkConnector>) {
    let connector = Arc::new(SdkConnector::new(
        config.aws.endpoint_url.clone(),
        metrics.clone(),
    ));
    let service = Arc::new(SyncService {
        store,
        connector: connector.clone(),
        metrics,
        clock: Arc::new(SystemClock),
        concurrency: config.sync.concurrency,
        parallel_regions: config.sync.parallel_regions,
        owner: replica_id(),
        // A pass longer than this is taken over by another replica; generous on purpose.
        lease: config.sync.interval.max(Duration::from_secs(30 * 60)),
        passes: Default::default(),
    });
    (service, connector)
}

/// Identifies this process among replicas: host, pid and a random suffix.
fn replica_id() -> String {
    format!(
        "{}-{:08x}",
        crate::instance::instance_name(),
        rand::random::<u32>()
    )
}

/// The accounts to sync, with an error that says where they were to come from.
pub async fn targets(
    config: &Config,
    connector: &dyn KmsConnector,
) -> Result<Vec<crate::sync::Target>, CliError> {
    crate::sync::resolve_targets(config, connector)
        .await
        .map_err(|e| {
            if config.accounts.is_empty() {
                CliError::Aws(format!(
                    "no [[accounts]] are configured, so Keyward watches the account of the default AWS credentials, but they could not be used: {e}"
                ))
            } else {
                CliError::Aws(e.to_string())
            }
        })
}
