//! Webhooks for ticketing systems: fans outbox events out to the configured receivers and
//! delivers them signed, at least once, retrying with exponential backoff and jitter.
//!
//! Every event is written to the outbox in the transaction of the change it describes (see
//! `store`), so nothing is announced that did not happen and nothing that happened is lost.
//! Delivery is at least once: a sender that crashes after the receiver answered but before the
//! result was recorded sends again once its lease expires. Receivers deduplicate on
//! `X-Keyward-Delivery`, which is the same on every attempt of one event to one webhook.

use chrono::TimeDelta;
use futures::future::join_all;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::WebhookConfig;
use crate::store::{ClaimedDelivery, DeliveryAttempt, Store, StoreResult, WebhookSubscription};

/// The header naming the event, e.g. `finding.opened`.
pub const EVENT_HEADER: &str = "x-keyward-event";
/// The header carrying the delivery id: the receiver's idempotency key.
pub const DELIVERY_HEADER: &str = "x-keyward-delivery";
/// The header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-keyward-signature";
/// The header carrying the attempt number (1 for the first); not signed, informational.
pub const ATTEMPT_HEADER: &str = "x-keyward-attempt";

/// Why the notifier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// A configured receiver.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl From<&WebhookConfig> for Webhook {
    fn from(c: &WebhookConfig) -> Self {
        Webhook {
            url: c.url.clone(),
            secret: c.secret.clone(),
            events: c.events.clone(),
        }
    }
}

/// Timing of delivery; tests shrink it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// How often an idle worker looks for new events and due retries.
    pub poll_interval: Duration,
    /// How long one POST may take, connecting included.
    pub timeout: Duration,
    /// The wait after the first failed attempt; doubled after each further one.
    pub base_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before a delivery is given up as `failed`.
    pub max_attempts: u32,
    /// Events fanned out, and deliveries sent concurrently, per round.
    pub batch: u32,
}

impl Default for DeliverySettings {
    /// 5 s · 2ⁿ up to an hour, 12 attempts: a receiver may be down for about five hours.
    fn default() -> Self {
        DeliverySettings {
            poll_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            max_attempts: 12,
            batch: 32,
        }
    }
}

impl DeliverySettings {
    /// How long a claimed attempt is reserved for its sender: well past the request timeout, so
    /// a live sender always records its result before anyone else may retry.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(30)
    }
}

/// `sha256=<hex>` of HMAC-SHA256 keyed with `secret` over `body`: the `X-Keyward-Signature`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before the attempt after `attempts` failed ones: `base · 2^(attempts-1)`, capped,
/// with "equal jitter" (between half and all of it) so that receivers coming back up are not
/// hit by every sender at once.
pub fn backoff(settings: &DeliverySettings, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let full = settings
        .base_backoff
        .saturating_mul(1u32 << exponent)
        .min(settings.max_backoff);
    let half = full / 2;
    let jitter = rand::random_range(0.0..=1.0);
    half + half.mul_f64(jitter)
}

/// The JSON body POSTed for a delivery; the same bytes on every attempt.
pub fn body(claimed: &ClaimedDelivery) -> Vec<u8> {
    let data: serde_json::Value = serde_json::from_str(&claimed.payload)
        .unwrap_or_else(|_| serde_json::Value::String(claimed.payload.clone()));
    let body = serde_json::json!({
        "id": claimed.delivery.id,
        "event": claimed.delivery.event,
        "created_at": claimed.event_created_at,
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// What one round of work did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Outbox events fanned out to deliveries.
    pub dispatched: u64,
    /// Attempts made.
    pub attempted: u64,
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub retrying: u64,
    /// Deliveries given up.
    pub failed: u64,
}

/// Delivers outbox events to the configured webhooks. Several replicas may each run one.
pub struct Notifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    webhooks: HashMap<String, Webhook>,
    subscriptions: Vec<WebhookSubscription>,
    urls: Vec<String>,
    settings: DeliverySettings,
    client: reqwest::Client,
    /// This worker's lease owner name.
    owner: String,
}

impl Notifier {
    /// A notifier for `webhooks`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        webhooks: Vec<Webhook>,
        settings: DeliverySettings,
    ) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A receiver answers; it does not send Keyward's signed events elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "keyward/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        let subscriptions = webhooks
            .iter()
            .map(|w| WebhookSubscription {
                url: w.url.clone(),
                events: w.events.clone(),
            })
            .collect();
        let urls = webhooks.iter().map(|w| w.url.clone()).collect();
        let owner = format!("notifier-{}", hex::encode(rand::random::<[u8; 8]>()));
        Ok(Notifier {
            store,
            clock,
            webhooks: webhooks.into_iter().map(|w| (w.url.clone(), w)).collect(),
            subscriptions,
            urls,
            settings,
            client,
            owner,
        })
    }

    /// One round: fans out new events, then sends the deliveries that are due.
    #[tracing::instrument(skip_all, fields(owner = %self.owner))]
    pub async fn run_once(&self) -> StoreResult<Round> {
        let mut round = Round::default();
        if self.webhooks.is_empty() {
            return Ok(round);
        }
        round.dispatched = self
            .store
            .dispatch_outbox(&self.subscriptions, self.clock.now(), self.settings.batch)
            .await?;
        let now = self.clock.now();
        let lease_until = now + to_delta(self.settings.lease());
        let claimed = self
            .store
            .claim_deliveries(
                &self.urls,
                &self.owner,
                now,
                lease_until,
                self.settings.batch,
            )
            .await?;
        let results = join_all(claimed.into_iter().map(|c| self.deliver(c))).await;
        for result in results {
            round.attempted += 1;
            match result? {
                DeliveryAttempt::Delivered { .. } => round.delivered += 1,
                DeliveryAttempt::Retry { .. } => round.retrying += 1,
                DeliveryAttempt::Failed { .. } => round.failed += 1,
            }
        }
        Ok(round)
    }

    /// Runs rounds until `shutdown` turns true; a full round is followed by another at once.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(webhooks = self.webhooks.len(), "webhook delivery started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let busy = match self.run_once().await {
                Ok(round) => {
                    let full = u64::from(self.settings.batch);
                    round.dispatched >= full || round.attempted >= full
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery round failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Sends one claimed attempt and records how it ended.
    async fn deliver(&self, claimed: ClaimedDelivery) -> StoreResult<DeliveryAttempt> {
        let delivery = &claimed.delivery;
        let outcome = match self.webhooks.get(&delivery.webhook) {
            Some(webhook) => self.post(webhook, &claimed).await,
            None => Err((None, "the webhook is no longer configured".to_string())),
        };
        let attempt = match outcome {
            Ok(status) => DeliveryAttempt::Delivered {
                at: self.clock.now(),
                status,
            },
            Err((status, error)) if delivery.attempts >= self.settings.max_attempts => {
                tracing::warn!(delivery = %delivery.id, webhook = %delivery.webhook,
                    attempts = delivery.attempts, %error, "webhook delivery given up");
                DeliveryAttempt::Failed { status, error }
            }
            Err((status, error)) => {
                let wait = backoff(&self.settings, delivery.attempts);
                tracing::info!(delivery = %delivery.id, webhook = %delivery.webhook,
                    attempts = delivery.attempts, %error, retry_in = ?wait,
                    "webhook delivery failed; will retry");
                DeliveryAttempt::Retry {
                    next_attempt_at: self.clock.now() + to_delta(wait),
                    status,
                    error,
                }
            }
        };
        let recorded = self
            .store
            .complete_delivery(&delivery.id, &self.owner, &attempt)
            .await?;
        if !recorded {
            // Our lease ran out and another sender took over: its result counts.
            tracing::warn!(delivery = %delivery.id, "webhook delivery lease lost");
        }
        Ok(attempt)
    }

    /// POSTs the delivery; the HTTP status of a 2xx answer, or the status and error otherwise.
    async fn post(
        &self,
        webhook: &Webhook,
        claimed: &ClaimedDelivery,
    ) -> Result<u16, (Option<u16>, String)> {
        let body = body(claimed);
        let response = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &claimed.delivery.event)
            .header(DELIVERY_HEADER, &claimed.delivery.id)
            .header(SIGNATURE_HEADER, signature(&webhook.secret, &body))
            .header(ATTEMPT_HEADER, claimed.delivery.attempts.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| (None, describe(e, self.settings.timeout)))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err((
                Some(status.as_u16()),
                format!("the receiver answered HTTP {status}"),
            ))
        }
    }
}

/// A transport error for the delivery list, without the URL (it is shown beside it).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}", humantime::format_duration(timeout))
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.without_url().to_string()
    }
}

fn to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let s = DeliverySettings::default();
        for _ in 0..50 {
            let first = backoff(&s, 1);
            assert!(first >= Duration::from_millis(2500) && first <= Duration::from_secs(5));
            let fourth = backoff(&s, 4);
            assert!(fourth >= Duration::from_secs(20) && fourth <= Duration::from_secs(40));
            let late = backoff(&s, 40);
            assert!(late >= Duration::from_secs(1800) && late <= Duration::from_secs(3600));
        }
    }

    #[test]
    fn lease_outlasts_the_request_timeout() {
        let s = DeliverySettings::default();
        assert!(s.lease() > s.timeout);
    }
}
