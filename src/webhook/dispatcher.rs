//! The delivery loop: outbox fill, scheduling with per-endpoint concurrency, HTTP, retries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use super::signing::{legacy_signature, signature_header};
use super::store::{self, lock, now_ms, Failure};
use super::{
    Endpoint, Inner, TestDelivery, WebhookConfig, WebhookError, HEADER_ID, HEADER_LEGACY_SIGNATURE,
    HEADER_SIGNATURE, HEADER_TIMESTAMP, TEST_EVENT_TYPE,
};

/// A running delivery loop, from [`super::Webhooks::start`]. Stop it with
/// [`Dispatcher::shutdown`]; dropping it aborts the loop and any request in flight (those
/// deliveries stay pending and are sent again later, with the same `webhook-id`).
#[derive(Debug)]
pub struct Dispatcher {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Dispatcher {
    /// Stops the loop and waits for it to end. Requests in flight are abandoned; their
    /// deliveries stay pending.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Whether the loop is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct RunningGuard(Arc<Inner>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

pub(crate) fn start(inner: Arc<Inner>) -> Result<Dispatcher, WebhookError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
    if inner.running.swap(true, Ordering::SeqCst) {
        return Err(WebhookError::AlreadyRunning);
    }
    let live = inner
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .resubscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let guard = RunningGuard(inner);
    let task = handle.spawn(run(guard, live, stop_rx));
    Ok(Dispatcher {
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// The retry delay after `attempts` failed attempts: `initial * 2^(attempts-1)`, capped at
/// `max_backoff`, spread by ±`jitter`.
pub(crate) fn backoff(config: &WebhookConfig, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = config
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(config.max_backoff);
    if config.jitter <= 0.0 {
        return base;
    }
    let factor = 1.0 + rand::thread_rng().gen_range(-config.jitter..=config.jitter);
    Duration::try_from_secs_f64(base.as_secs_f64() * factor.max(0.0)).unwrap_or(base)
}

enum Outcome {
    Delivered(u16),
    Failed {
        status: Option<u16>,
        error: String,
        endpoint_down: bool,
    },
}

async fn run(
    guard: RunningGuard,
    mut live: tokio::sync::broadcast::Receiver<crate::events::StoredEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let inner = guard.0.clone();
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    // task id -> (delivery id, endpoint id)
    let mut in_flight: HashMap<tokio::task::Id, (i64, i64)> = HashMap::new();
    let mut live_open = true;
    loop {
        if let Err(e) = fill_outbox(&inner) {
            log::warn!("webhooks: filling the outbox failed: {e}");
        }
        let now = now_ms();
        let next_due = match dispatch_due(&inner, &mut tasks, &mut in_flight, now) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("webhooks: scheduling deliveries failed: {e}");
                None
            }
        };
        let poll = inner.config.poll_interval;
        let wait = next_due
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(poll)
            .min(poll);
        tokio::select! {
            _ = &mut stop => break,
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                match joined {
                    Ok((id, outcome)) => {
                        if let Some((delivery, endpoint)) = in_flight.remove(&id) {
                            record(&inner, delivery, endpoint, outcome);
                        }
                    }
                    Err(e) => {
                        in_flight.remove(&e.id());
                        log::warn!("webhooks: a delivery task failed: {e}");
                    }
                }
            }
            r = live.recv(), if live_open => {
                if let Err(RecvError::Closed) = r {
                    live_open = false;
                }
            }
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tasks.abort_all();
    drop(guard);
}

fn fill_outbox(inner: &Inner) -> Result<(), WebhookError> {
    loop {
        let (events, _) = store::enqueue_batch(&inner.conn, inner.config.batch_size)?;
        if events < inner.config.batch_size {
            return Ok(());
        }
    }
}

fn dispatch_due(
    inner: &Arc<Inner>,
    tasks: &mut JoinSet<Outcome>,
    in_flight: &mut HashMap<tokio::task::Id, (i64, i64)>,
    now: u64,
) -> Result<Option<u64>, WebhookError> {
    let limit = inner.config.max_concurrency_per_endpoint;
    for ep in store::ready_endpoints(&inner.conn, now)? {
        let busy = in_flight.values().filter(|(_, e)| *e == ep.id).count();
        let slots = limit.saturating_sub(busy);
        if slots == 0 {
            continue;
        }
        let sending: HashSet<i64> = in_flight.values().map(|(d, _)| *d).collect();
        let jobs = store::due_jobs(&inner.conn, &ep, now, slots + busy, &|id| {
            sending.contains(&id)
        })?;
        for job in jobs.into_iter().take(slots) {
            let client = inner.client.clone();
            let (delivery, endpoint) = (job.delivery_id, job.endpoint.id);
            let handle = tasks.spawn(async move {
                post(&client, &job.endpoint, &job.webhook_id, job.body).await
            });
            in_flight.insert(handle.id(), (delivery, endpoint));
        }
    }
    store::next_due_after(&inner.conn, now)
}

fn record(inner: &Inner, delivery: i64, endpoint: i64, outcome: Outcome) {
    let res = match outcome {
        Outcome::Delivered(status) => {
            store::record_success(&inner.conn, delivery, endpoint, status).map(|_| ())
        }
        Outcome::Failed {
            status,
            error,
            endpoint_down,
        } => {
            log::debug!("webhooks: delivery {delivery} to endpoint {endpoint} failed: {error}");
            let failure = Failure {
                status,
                error: &error,
                endpoint_down,
            };
            let config = &inner.config;
            store::record_failure(
                &inner.conn,
                delivery,
                endpoint,
                &failure,
                config.horizon,
                &|n| backoff(config, n),
            )
            .map(|state| {
                if state == Some(super::DeliveryState::Dead) {
                    log::warn!(
                        "webhooks: delivery {delivery} to endpoint {endpoint} dead-lettered: {error}"
                    );
                }
            })
        }
    };
    if let Err(e) = res {
        log::warn!("webhooks: recording delivery {delivery} failed: {e}");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

async fn post(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    webhook_id: &str,
    body: String,
) -> Outcome {
    let now = now_ms();
    let timestamp = (now / 1000) as i64;
    let signature = match signature_header(
        &endpoint.signing_secrets(now),
        webhook_id,
        timestamp,
        body.as_bytes(),
    ) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed {
                status: None,
                error: format!("the endpoint's secret is unusable: {e}"),
                endpoint_down: false,
            }
        }
    };
    let legacy = legacy_signature(&endpoint.secret, body.as_bytes());
    let res = client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_ID, webhook_id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_SIGNATURE, signature)
        .header(HEADER_LEGACY_SIGNATURE, legacy)
        .body(body)
        .send()
        .await;
    match res {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return Outcome::Delivered(status);
            }
            let mut snippet = Vec::new();
            while snippet.len() < 200 {
                match resp.chunk().await {
                    Ok(Some(c)) => snippet.extend_from_slice(&c),
                    _ => break,
                }
            }
            snippet.truncate(200);
            let text = String::from_utf8_lossy(&snippet);
            let text = text.trim();
            Outcome::Failed {
                status: Some(status),
                error: if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {text}")
                },
                endpoint_down: matches!(status, 408 | 429 | 502 | 503 | 504),
            }
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            Outcome::Failed {
                status: None,
                error: format!("{kind}: {}", error_chain(&e)),
                endpoint_down: true,
            }
        }
    }
}

pub(crate) async fn send_test(inner: &Inner, id: i64) -> Result<TestDelivery, WebhookError> {
    let endpoint = store::get_endpoint(&lock(&inner.conn), id)?;
    let webhook_id = format!("test_{}_{id}", rand::thread_rng().gen::<u64>());
    let body = serde_json::json!({
        "event": TEST_EVENT_TYPE,
        "endpoint_id": id,
        "timestamp": crate::events::rfc3339_now(),
        "description": "Test message from Lightkeeper",
        "metadata": {},
    })
    .to_string();
    let started = Instant::now();
    match post(&inner.client, &endpoint, &webhook_id, body).await {
        Outcome::Delivered(status) => Ok(TestDelivery {
            webhook_id,
            status,
            elapsed: started.elapsed(),
        }),
        Outcome::Failed { error, .. } => Err(WebhookError::DeliveryFailed(format!(
            "{}: {error}",
            endpoint.url
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let mut c = WebhookConfig {
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            jitter: 0.0,
            ..WebhookConfig::default()
        };
        let delays: Vec<u64> = (1..=6).map(|n| backoff(&c, n).as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(&c, u32::MAX), Duration::from_secs(60));
        c.jitter = 0.5;
        for _ in 0..100 {
            let d = backoff(&c, 2).as_secs_f64();
            assert!((5.0..=15.0).contains(&d), "{d}");
        }
        c.max_backoff = Duration::MAX;
        c.jitter = 1.0;
        let _ = backoff(&c, 200);
    }
}
