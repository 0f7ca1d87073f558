//! RFC 8935 push delivery of queued SETs: each stream's SETs in order, in batches (one claim and
//! one record per batch), retried with backoff; a 400 `err` is recorded and not retried.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::clock::Clock;
use crate::domain::{PublicUrl, Result, Timestamp};
use crate::events::destinations::is_public;
use crate::events::webhooks::DeliveryPolicy;
use crate::store::streams::{self, PushOutcome, QueuedSet};
use crate::store::{ReadPool, Writer};
use crate::tokens::SetKeyRing;

/// What the push worker uses.
#[derive(Clone)]
pub struct Pusher {
    pub writer: Writer,
    pub readers: Arc<ReadPool>,
    pub clock: Arc<Clock>,
    pub keys: Arc<SetKeyRing>,
    pub public_url: PublicUrl,
    /// Opens the sealed authorization headers.
    pub master: [u8; 32],
    /// Signalled when SETs were queued ([`crate::store::Effect::OutboxWritten`]).
    pub queued: Arc<tokio::sync::Notify>,
}

type HttpClient = crate::events::outbound::OutboundClient;

/// SETs of one stream claimed, signed and posted together.
const BATCH: usize = 64;

/// How often the worker looks for pending SETs when nothing wakes it: SETs queued are signalled
/// once their batch commits (on another node, once this node's tailer applied it), so this
/// bounds only how late a retry that came due is sent.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Delivers pending push SETs until `stop` resolves; one task per stream with SETs due.
pub async fn run(
    pusher: Pusher,
    policy: DeliveryPolicy,
    client: HttpClient,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let now = pusher.clock.now();
        match pusher.readers.read(move |conn| streams::push_streams_due(conn, now)).await {
            Ok(ids) => {
                for stream in ids {
                    let fresh = busy.lock().map(|mut b| b.insert(stream.clone())).unwrap_or(false);
                    if !fresh {
                        continue;
                    }
                    let (pusher, client, busy) = (pusher.clone(), client.clone(), busy.clone());
                    tokio::spawn(async move {
                        if let Err(e) = deliver_stream(&pusher, &client, policy, &stream).await {
                            tracing::warn!(error = %e, stream = %stream, "SET push failed to record");
                        }
                        if let Ok(mut b) = busy.lock() {
                            b.remove(&stream);
                        }
                        // A SET queued while this stream was busy was passed over by the look it
                        // woke: look again now, not at the next interval.
                        pusher.queued.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading pending SETs failed"),
        }
        tokio::select! {
            _ = pusher.queued.notified() => {}
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Delivers a stream's due SETs, oldest first, batch after batch, until none is due. The next
/// batch is claimed and signed while this one is posted (signing is most of a SET's cost), but
/// posted only once this one went out without a failure to retry.
async fn deliver_stream(pusher: &Pusher, client: &HttpClient, policy: DeliveryPolicy, stream: &str) -> Result<()> {
    let Some(mut current) = claim_batch(pusher, policy, stream, 0).await? else { return Ok(()) };
    let mut signing = start_signing(pusher, &current);
    loop {
        let signed = finish_signing(signing).await?;
        let last = current.last().map_or(0, |s| s.id);
        let next = claim_batch(pusher, policy, stream, last).await?;
        let next_signing = next.as_ref().map(|b| start_signing(pusher, b));
        let retry_at = post_batch(pusher, client, policy, &current, signed).await?;
        match (next, next_signing) {
            (Some(next), _) if retry_at.is_some() => {
                // This batch stopped at a failure: the next one waits for that retry, unsent.
                let (ids, due) = (next.iter().map(|s| s.id).collect::<Vec<_>>(), retry_at.unwrap_or_default());
                pusher.writer.execute(move |tx| ids.iter().try_for_each(|id| streams::release(tx, *id, due))).await?;
                return Ok(());
            }
            (Some(next), Some(next_signing)) => {
                current = next;
                signing = next_signing;
            }
            _ => return Ok(()),
        }
    }
}

/// Reads the stream's due SETs after `after` and claims them: only the claim (a conditional
/// write) decides who attempts a SET. The lease makes them due again if this process dies
/// mid-attempt (at-least-once). `None` when there is nothing to send.
async fn claim_batch(
    pusher: &Pusher,
    policy: DeliveryPolicy,
    stream: &str,
    after: i64,
) -> Result<Option<Vec<QueuedSet>>> {
    let now = pusher.clock.now();
    let id = stream.to_owned();
    let batch = pusher.readers.read(move |conn| streams::due_batch(conn, &id, now, after, BATCH)).await?;
    if batch.is_empty() {
        return Ok(None);
    }
    let lease_until = now.plus_millis(policy.timeout.as_millis() as i64 * BATCH as i64 * 2 + 5_000);
    let claims: Vec<(i64, u32)> = batch.iter().map(|s| (s.id, s.attempts)).collect();
    let claimed = pusher
        .writer
        .execute(move |tx| {
            let mut won = Vec::new();
            for (id, attempts) in claims {
                if streams::claim(tx, id, attempts, lease_until)? {
                    won.push(id);
                }
            }
            Ok(won)
        })
        .await?;
    // Keep the claimed prefix only: a SET another worker holds breaks the order after it.
    let batch: Vec<QueuedSet> = batch.into_iter().take_while(|s| claimed.contains(&s.id)).collect();
    Ok((!batch.is_empty()).then_some(batch))
}

/// Posts a signed batch in order and records the outcomes; answers the retry time when it
/// stopped at a failure to retry (the SETs after it are released untried, due then).
async fn post_batch(
    pusher: &Pusher,
    client: &HttpClient,
    policy: DeliveryPolicy,
    batch: &[QueuedSet],
    signed: Vec<Result<String>>,
) -> Result<Option<Timestamp>> {
    let mut outcomes: Vec<(i64, u32, PushOutcome)> = Vec::with_capacity(batch.len());
    for (set, jws) in batch.iter().zip(signed) {
        let outcome = match jws {
            Err(e) => PushOutcome::Failed { status: None, error: format!("signing: {e}") },
            Ok(jws) => attempt(pusher, client, policy, set, jws).await,
        };
        // A failure that will be retried holds the SETs after it back: order is kept.
        let halt = matches!(outcome, PushOutcome::Failed { .. });
        outcomes.push((set.id, set.attempts + 1, outcome));
        if halt {
            break;
        }
    }
    let failed_at = outcomes.last().filter(|o| matches!(o.2, PushOutcome::Failed { .. })).map(|o| o.1);
    let retry_at = pusher.clock.now().plus_millis(policy.backoff(failed_at.unwrap_or(1)).as_millis() as i64);
    let max_attempts = policy.max_attempts;
    let untried: Vec<i64> = batch.iter().skip(outcomes.len()).map(|s| s.id).collect();
    pusher
        .writer
        .execute(move |tx| {
            for (id, attempts, outcome) in &outcomes {
                streams::record_push(tx, *id, *attempts, outcome, retry_at, *attempts >= max_attempts)?;
            }
            for id in &untried {
                streams::release(tx, *id, retry_at)?;
            }
            Ok(())
        })
        .await?;
    Ok(failed_at.map(|_| retry_at))
}

type Signing = Vec<tokio::task::JoinHandle<Vec<Result<String>>>>;

/// Starts signing a batch. RSA signing is CPU work (about a millisecond a SET): off the
/// runtime's workers, split over the cores, so a cascade's SETs are not signed one core at a time.
fn start_signing(pusher: &Pusher, batch: &[QueuedSet]) -> Signing {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let chunk = batch.len().div_ceil(cores).max(1);
    batch
        .chunks(chunk)
        .map(|part| {
            let (keys, issuer, part) = (pusher.keys.clone(), pusher.public_url.as_str().to_owned(), part.to_vec());
            tokio::task::spawn_blocking(move || part.iter().map(|set| super::sign(&keys, &issuer, set)).collect())
        })
        .collect()
}

/// The signatures of a batch, in its order.
async fn finish_signing(parts: Signing) -> Result<Vec<Result<String>>> {
    let mut signed = Vec::new();
    for part in parts {
        signed.extend(part.await.map_err(|e| crate::domain::Error::internal(format!("signing SETs: {e}")))?);
    }
    Ok(signed)
}

/// A literal IP host that deliveries may not use (names are filtered by the resolver).
fn refused_literal(url: &str, allow_private: bool) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    (!allow_private && !is_public(ip)).then(|| format!("{ip} is not a public address"))
}

/// Posts one SET (RFC 8935 §2).
async fn attempt(
    pusher: &Pusher,
    client: &HttpClient,
    policy: DeliveryPolicy,
    set: &QueuedSet,
    jws: String,
) -> PushOutcome {
    let Some(url) = set.endpoint_url.as_deref() else {
        return PushOutcome::Failed { status: None, error: "the stream has no endpoint_url".into() };
    };
    if let Some(why) = refused_literal(url, policy.allow_private_addresses) {
        return PushOutcome::Failed { status: None, error: why };
    }
    let mut request = hyper::Request::post(url)
        .header("content-type", "application/secevent+jwt")
        .header("accept", "application/json")
        .header("user-agent", "tether-ssf");
    if let Some(sealed) = &set.authorization_sealed {
        match super::unseal(&pusher.master, &set.stream_id, sealed) {
            Ok(value) => request = request.header("authorization", value),
            Err(e) => return PushOutcome::Failed { status: None, error: e.to_string() },
        }
    }
    let request = match request.body(Full::new(Bytes::from(jws))) {
        Ok(r) => r,
        Err(e) => return PushOutcome::Failed { status: None, error: format!("bad request: {e}") },
    };
    let answer = tokio::time::timeout(policy.timeout, async {
        let response = client.request(request).await?;
        let status = response.status();
        // The error body is small (RFC 8935 §2.3); read at most a few KiB of it.
        let body = http_body_util::Limited::new(response.into_body(), 4096).collect().await.map(|b| b.to_bytes());
        Ok::<_, hyper_util::client::legacy::Error>((status, body.unwrap_or_default()))
    })
    .await;
    match answer {
        Err(_) => PushOutcome::Failed { status: None, error: "timed out".into() },
        Ok(Err(e)) => PushOutcome::Failed { status: None, error: format!("connection: {e}") },
        Ok(Ok((status, _))) if status.is_success() => PushOutcome::Accepted { status: status.as_u16() },
        Ok(Ok((status, body))) if status.as_u16() == 400 => {
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match parsed.get("err").and_then(|e| e.as_str()) {
                Some(err) => {
                    let description = parsed.get("description").and_then(|d| d.as_str()).unwrap_or_default();
                    let text: String = format!("{err}: {description}").chars().take(300).collect();
                    PushOutcome::Refused { status: 400, error: text }
                }
                None => PushOutcome::Failed { status: Some(400), error: "answered 400 without an `err`".into() },
            }
        }
        Ok(Ok((status, _))) => {
            PushOutcome::Failed { status: Some(status.as_u16()), error: format!("answered {}", status.as_u16()) }
        }
    }
}
