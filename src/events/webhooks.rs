//! Webhook delivery: Standard Webhooks signatures, retries with exponential backoff and jitter,
//! at-least-once from the outbox (pending rows survive a crash and are resumed at start).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::body::Bytes;
use rand::Rng;
use sha2::Sha256;

use super::destinations::is_public;
use super::outbound::OutboundClient;
use crate::clock::Clock;
use crate::domain::{Result, WebhookId};
use crate::store::webhooks::{self, Attempt};
use crate::store::{ReadPool, Writer};

/// What the delivery worker uses: the writer (claims and attempts), a read pool (due rows), the
/// outbox signal the writer raises after committing deliveries, the clock and the master key
/// webhook secrets are derived from.
#[derive(Clone)]
pub struct Deliverer {
    pub writer: Writer,
    pub readers: Arc<ReadPool>,
    pub outbox: Arc<tokio::sync::Notify>,
    pub clock: Arc<Clock>,
    pub webhook_master: [u8; 32],
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    /// Delay before the first retry; doubles each attempt (with ±20% jitter), capped at `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Attempts before a delivery is marked `failed`.
    pub max_attempts: u32,
    /// How long one attempt may take before it counts as failed.
    pub timeout: Duration,
    /// Deliver to private, loopback and link-local addresses too (a development setup, or a
    /// deployment whose receivers are all on the private network). Off by default: see
    /// `events::destinations`.
    pub allow_private_addresses: bool,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(600),
            max_attempts: 8,
            timeout: Duration::from_secs(10),
            allow_private_addresses: false,
        }
    }
}

impl DeliveryPolicy {
    /// Delay after `attempts` failed attempts.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)));
        let capped = exp.min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        capped.mul_f64(jitter)
    }
}

/// HMAC-SHA256 keyed with `key`; HMAC accepts keys of any length, so this cannot fail.
#[allow(clippy::expect_used)]
fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// The per-webhook secret: derived from the data directory's webhook master key and the webhook
/// id, so it is never stored and cannot be read back through the API or the database.
pub fn secret(master: &[u8; 32], webhook: WebhookId) -> String {
    let mut mac = hmac(master);
    mac.update(b"tether-webhook-secret-v1:");
    mac.update(webhook.to_string().as_bytes());
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed with
/// the base64-decoded part of the `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = hmac(&key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

type HttpClient = OutboundClient;

/// A literal IP host that deliveries may not use (names are filtered by the resolver).
fn refused_literal(url: &str, allow_private: bool) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    (!allow_private && !is_public(ip)).then(|| format!("{ip} is not a public address"))
}

/// Posts one signed delivery.
async fn post(
    client: &HttpClient,
    url: &str,
    headers: [(&str, String); 3],
    body: Vec<u8>,
    timeout: Duration,
) -> Attempt {
    let mut request =
        hyper::Request::post(url).header("content-type", "application/json").header("user-agent", "tether-webhooks");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = match request.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => return Attempt::Failed { status: None, error: format!("bad request: {e}") },
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Attempt::Failed { status: None, error: "timed out".into() },
        Ok(Err(e)) => {
            Attempt::Failed { status: None, error: format!("connection: {}", crate::domain::error::with_causes(&e)) }
        }
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            if response.status().is_success() {
                Attempt::Acknowledged { status }
            } else {
                Attempt::Failed { status: Some(status), error: format!("answered {status}") }
            }
        }
    }
}

/// Attempts in progress at once, in all: each holds a socket for up to the attempt timeout.
const MAX_IN_FLIGHT: usize = 64;
/// Attempts in progress at once for one webhook, so a receiver that never answers holds a few
/// sockets and never the whole budget.
const MAX_IN_FLIGHT_PER_WEBHOOK: usize = 4;

/// The attempts in progress: delivery ids, and how many per webhook.
#[derive(Default)]
struct InFlight {
    deliveries: HashSet<i64>,
    per_webhook: HashMap<WebhookId, usize>,
}

impl InFlight {
    /// Takes a slot for this delivery, if it is not in progress already and both budgets allow.
    fn start(&mut self, delivery: i64, webhook: WebhookId) -> bool {
        let busy = self.per_webhook.get(&webhook).copied().unwrap_or(0);
        if self.deliveries.len() >= MAX_IN_FLIGHT
            || busy >= MAX_IN_FLIGHT_PER_WEBHOOK
            || !self.deliveries.insert(delivery)
        {
            return false;
        }
        self.per_webhook.insert(webhook, busy + 1);
        true
    }

    fn finish(&mut self, delivery: i64, webhook: WebhookId) {
        self.deliveries.remove(&delivery);
        if let Some(busy) = self.per_webhook.get_mut(&webhook) {
            *busy -= 1;
            if *busy == 0 {
                self.per_webhook.remove(&webhook);
            }
        }
    }

    /// Free slots in all, and how many each webhook has in progress.
    fn room(&self) -> (usize, HashMap<WebhookId, usize>) {
        (MAX_IN_FLIGHT - self.deliveries.len(), self.per_webhook.clone())
    }
}

/// Delivers due outbox rows until `stop` resolves. Each attempt runs in its own task, so a
/// receiver that never answers only holds its own deliveries, never the others; at most
/// `MAX_IN_FLIGHT` attempts (`MAX_IN_FLIGHT_PER_WEBHOOK` per webhook) run at once.
pub async fn run(
    services: Deliverer,
    policy: DeliveryPolicy,
    client: HttpClient,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let in_flight: Arc<Mutex<InFlight>> = Arc::default();
    let mut polls = 0usize;
    loop {
        let now = services.clock.now();
        let (room, busy) = in_flight.lock().map(|f| f.room()).unwrap_or_default();
        polls = polls.wrapping_add(1);
        let due = match room {
            0 => Ok(Vec::new()),
            room => {
                services
                    .readers
                    .read(move |conn| {
                        webhooks::due_deliveries(conn, now, room, MAX_IN_FLIGHT_PER_WEBHOOK, &busy, polls)
                    })
                    .await
            }
        };
        match due {
            Ok(due) => {
                for delivery in due {
                    let started =
                        in_flight.lock().map(|mut f| f.start(delivery.id, delivery.webhook_id)).unwrap_or(false);
                    if !started {
                        continue;
                    }
                    let services = services.clone();
                    let client = client.clone();
                    let in_flight = in_flight.clone();
                    tokio::spawn(async move {
                        if let Err(e) = deliver(&services, &client, policy, &delivery).await {
                            tracing::warn!(error = %e, delivery = delivery.id, "recording a webhook attempt failed");
                        }
                        if let Ok(mut f) = in_flight.lock() {
                            f.finish(delivery.id, delivery.webhook_id);
                        }
                        services.outbox.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading due webhook deliveries failed"),
        }
        tokio::select! {
            _ = services.outbox.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

async fn deliver(
    services: &Deliverer,
    client: &HttpClient,
    policy: DeliveryPolicy,
    delivery: &webhooks::DueDelivery,
) -> Result<()> {
    // Claim the attempt first: the due list may be a read from before another attempt of this
    // delivery committed, so only the claim (a conditional write) decides who tries. The lease
    // makes a delivery due again if this process dies mid-attempt (at-least-once).
    let lease_until = services.clock.now().plus_millis(policy.timeout.as_millis() as i64 + 5_000);
    let (id, expected) = (delivery.id, delivery.attempts);
    let claimed = services.writer.execute(move |tx| webhooks::claim_delivery(tx, id, expected, lease_until)).await?;
    if !claimed {
        return Ok(());
    }
    let body = serde_json::to_vec(&super::notification(&delivery.event)).unwrap_or_default();
    let timestamp = services.clock.now().seconds();
    let secret = secret(&services.webhook_master, delivery.webhook_id);
    let signature = sign(&secret, &delivery.event.id, timestamp, &body);
    let headers = [
        ("webhook-id", delivery.event.id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let outcome = match refused_literal(&delivery.url, policy.allow_private_addresses) {
        Some(why) => Attempt::Failed { status: None, error: why },
        None => post(client, &delivery.url, headers, body, policy.timeout).await,
    };
    let id = delivery.id;
    let attempts = delivery.attempts + 1;
    let retry_at = services.clock.now().plus_millis(policy.backoff(attempts).as_millis() as i64);
    let give_up = attempts >= policy.max_attempts;
    services
        .writer
        .execute(move |tx| webhooks::record_delivery_attempt(tx, id, attempts, &outcome, retry_at, give_up))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_in_progress_stay_within_the_per_webhook_and_total_budgets() {
        let mut in_flight = InFlight::default();
        let slow = WebhookId::generate();
        let started = (0..10).filter(|d| in_flight.start(*d, slow)).count();
        assert_eq!(started, MAX_IN_FLIGHT_PER_WEBHOOK, "one webhook holds a few slots, never the budget");
        assert!(!in_flight.start(0, slow), "a delivery in progress is not started twice");
        assert_eq!(in_flight.room(), (MAX_IN_FLIGHT - MAX_IN_FLIGHT_PER_WEBHOOK, HashMap::from([(slow, 4)])));

        let others: Vec<WebhookId> = (0..MAX_IN_FLIGHT).map(|_| WebhookId::generate()).collect();
        let more = others.iter().enumerate().filter(|(i, w)| in_flight.start(100 + *i as i64, **w)).count();
        assert_eq!(more, MAX_IN_FLIGHT - MAX_IN_FLIGHT_PER_WEBHOOK, "the total budget holds");
        assert_eq!(in_flight.room().0, 0);

        in_flight.finish(0, slow);
        assert_eq!(in_flight.room().1.get(&slow), Some(&(MAX_IN_FLIGHT_PER_WEBHOOK - 1)), "a slot again");
        assert!(in_flight.start(0, slow));
    }

    #[tokio::test]
    async fn a_delivery_to_a_name_with_no_public_address_says_so() {
        let client = super::super::outbound::Outbound::new(false, None).expect("client").client;
        let headers =
            [("webhook-id", String::new()), ("webhook-timestamp", String::new()), ("webhook-signature", String::new())];
        let attempt = post(&client, "http://localhost:9/hook", headers, Vec::new(), Duration::from_secs(5)).await;
        match attempt {
            Attempt::Failed { status: None, error } => {
                assert!(error.contains("resolves to no public address"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_literal_private_address_is_refused_at_delivery_unless_allowed() {
        assert!(refused_literal("http://127.0.0.1:9/hook", false).is_some());
        assert!(refused_literal("http://[fe80::1]/hook", false).is_some());
        assert!(refused_literal("http://127.0.0.1:9/hook", true).is_none());
        assert!(refused_literal("http://93.184.216.34/hook", false).is_none());
        // Names are not literals: the resolver decides for them.
        assert!(refused_literal("http://localhost/hook", false).is_none());
    }
}
