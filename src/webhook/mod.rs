//! Signed webhooks delivered from a durable outbox over the domain [`EventLog`].
//!
//! * **Endpoints** (URL, `whsec_` secret, event filter, enabled) live in the node database.
//!   URLs must be `https://`, except loopback hosts (127.0.0.0/8, `::1`, `localhost`).
//! * **Outbox**: the [`Dispatcher`] keeps a persisted cursor over `domain_events`; in one
//!   transaction it reads the events after the cursor, inserts one delivery per matching enabled
//!   endpoint (unique per event and endpoint) and advances the cursor. Nothing appended to the
//!   log is lost across crashes or restarts.
//! * **Delivery** is at-least-once: a `POST` with the event JSON as body and the
//!   [Standard Webhooks](https://www.standardwebhooks.com/) headers `webhook-id`
//!   (`evt_{seq}_{endpoint_id}`, stable across retries, for receiver idempotency),
//!   `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256>`, two entries while a
//!   rotated-out secret is still valid), plus seed 002's `X-Lightning-Signature`. Any 2xx
//!   answer is success; failures are retried with exponential backoff and jitter until the
//!   horizon (default 24 h), then the delivery is dead-lettered and listed as `dead`.
//! * **Ordering**: when an endpoint looks down (connection error, timeout, 408/429/502/503/504),
//!   the whole endpoint backs off and, with the default concurrency of 1, its backlog drains in
//!   event order once it is back. Other failures (e.g. a 400 or 500 for one message) only back
//!   off that message, so one poison message cannot block the others.
//! * Receivers check requests with [`verify`].
//!
//! # Receiving
//!
//! Verify the raw body before parsing it, answer 2xx quickly, and deduplicate on `webhook-id`
//! (a message can arrive more than once):
//!
//! ```
//! use lightkeeper::webhook::{verify, WebhookHeaders, DEFAULT_TOLERANCE};
//!
//! fn handle(secret: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
//!     let Ok(h) = WebhookHeaders::from_pairs(headers.iter().copied()) else { return 400 };
//!     if verify(secret, &h, body, DEFAULT_TOLERANCE, std::time::SystemTime::now()).is_err() {
//!         return 401;
//!     }
//!     // if seen(h.id) { return 200 }  -- idempotency
//!     let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
//!     println!("{} for {}", event["event"], event["invoice_id"]);
//!     200
//! }
//! # let _ = handle;
//! ```
//!
//! The same check in Python (standard library only):
//!
//! ```text
//! import base64, hashlib, hmac, time
//! def verify(secret, headers, body, tolerance=300):
//!     key = base64.b64decode(secret.removeprefix("whsec_"))
//!     msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
//!     if abs(time.time() - int(ts)) > tolerance: raise ValueError("timestamp out of tolerance")
//!     mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
//!     expected = base64.b64encode(mac).decode()
//!     for sig in headers["webhook-signature"].split():
//!         version, _, value = sig.partition(",")
//!         if version == "v1" and hmac.compare_digest(value, expected): return
//!     raise ValueError("no matching signature")
//! ```

mod dispatcher;
mod endpoint;
mod signing;
mod store;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::events::{EventLog, SharedConn, StoredEvent};

pub use dispatcher::Dispatcher;
pub use endpoint::{EVENT_TYPES, TEST_EVENT_TYPE};
pub use signing::{
    generate_secret, legacy_signature, sign, signature_header, verify, verify_legacy, VerifyError,
    WebhookHeaders, DEFAULT_TOLERANCE, HEADER_ID, HEADER_LEGACY_SIGNATURE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, SECRET_PREFIX,
};

/// Delivery tuning. The defaults suit production; tests shrink the durations.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// How long a delivery is retried before it is dead-lettered (default 24 h).
    pub horizon: Duration,
    /// Delay before the first retry; doubles with each failed attempt (default 5 s).
    pub initial_backoff: Duration,
    /// Upper bound of the retry delay (default 1 h).
    pub max_backoff: Duration,
    /// Random spread applied to each delay, as a fraction in `0.0..=1.0` (default 0.2 = ±20 %).
    pub jitter: f64,
    /// Timeout of one HTTP request, connect included (default 10 s).
    pub request_timeout: Duration,
    /// Requests in flight per endpoint (default 1, which keeps deliveries in event order).
    pub max_concurrency_per_endpoint: usize,
    /// How often the dispatcher looks for work without a live wake-up (default 5 s).
    pub poll_interval: Duration,
    /// Events moved into the outbox per transaction (default 500).
    pub batch_size: usize,
    /// How long a rotated-out secret keeps signing (default 24 h).
    pub rotation_grace: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(24 * 3600),
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            jitter: 0.2,
            request_timeout: Duration::from_secs(10),
            max_concurrency_per_endpoint: 1,
            poll_interval: Duration::from_secs(5),
            batch_size: 500,
            rotation_grace: Duration::from_secs(24 * 3600),
        }
    }
}

impl WebhookConfig {
    fn validate(&self) -> Result<(), WebhookError> {
        let bad = |m: &str| Err(WebhookError::InvalidConfig(m.to_string()));
        if self.horizon.is_zero() {
            return bad("horizon must be positive");
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return bad(
                "initial_backoff must be positive and max_backoff at least initial_backoff",
            );
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad("jitter must be within 0.0..=1.0");
        }
        if self.request_timeout.is_zero() || self.poll_interval.is_zero() {
            return bad("request_timeout and poll_interval must be positive");
        }
        if self.max_concurrency_per_endpoint == 0 || self.batch_size == 0 {
            return bad("max_concurrency_per_endpoint and batch_size must be at least 1");
        }
        Ok(())
    }
}

/// Errors of the webhook component. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The URL does not parse, has no host or uses a scheme other than http(s).
    InvalidUrl(String),
    /// The URL uses plain `http://` for a host that is not loopback; use `https://`.
    InsecureUrl(String),
    /// A supplied secret is not `whsec_<base64 key>`.
    InvalidSecret(String),
    /// The event filter names an unknown event type; the message lists the known ones.
    UnknownEventType(String),
    /// No endpoint has this id.
    UnknownEndpoint(i64),
    /// No delivery has this id.
    UnknownDelivery(i64),
    /// Only dead deliveries can be retried by hand; this one is pending or delivered.
    NotDead(i64),
    /// A [`WebhookConfig`] value is out of range; the message names it.
    InvalidConfig(String),
    /// [`Webhooks::start`] was called outside a Tokio runtime.
    NoRuntime,
    /// A dispatcher is already running for this [`Webhooks`].
    AlreadyRunning,
    /// A test delivery was not accepted: connection error, timeout or non-2xx status.
    DeliveryFailed(String),
    /// The database could not be read or written.
    Storage(String),
}

impl std::fmt::Display for WebhookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookError::InvalidUrl(m) => write!(f, "invalid webhook URL: {m}"),
            WebhookError::InsecureUrl(m) => write!(f, "insecure webhook URL: {m}"),
            WebhookError::InvalidSecret(m) => write!(f, "invalid webhook secret: {m}"),
            WebhookError::UnknownEventType(m) => write!(f, "unknown event type: {m}"),
            WebhookError::UnknownEndpoint(id) => {
                write!(
                    f,
                    "no webhook endpoint with id {id}; list endpoints to see the ids"
                )
            }
            WebhookError::UnknownDelivery(id) => write!(f, "no webhook delivery with id {id}"),
            WebhookError::NotDead(id) => write!(
                f,
                "webhook delivery {id} is not dead-lettered; only dead deliveries can be retried"
            ),
            WebhookError::InvalidConfig(m) => write!(f, "invalid webhook configuration: {m}"),
            WebhookError::NoRuntime => {
                write!(
                    f,
                    "the webhook dispatcher must be started inside a Tokio runtime"
                )
            }
            WebhookError::AlreadyRunning => {
                write!(
                    f,
                    "a webhook dispatcher is already running; shut it down first"
                )
            }
            WebhookError::DeliveryFailed(m) => write!(f, "webhook delivery failed: {m}"),
            WebhookError::Storage(m) => write!(f, "webhook storage error: {m}"),
        }
    }
}

impl std::error::Error for WebhookError {}

impl From<rusqlite::Error> for WebhookError {
    fn from(e: rusqlite::Error) -> Self {
        WebhookError::Storage(e.to_string())
    }
}

impl From<crate::Error> for WebhookError {
    fn from(e: crate::Error) -> Self {
        WebhookError::Storage(e.to_string())
    }
}

/// A configured webhook endpoint. `Debug` redacts the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable id (never reused).
    pub id: i64,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The current signing secret, `whsec_<base64>`.
    pub secret: String,
    /// The rotated-out secret that still signs until `previous_secret_expires_at_ms`.
    pub previous_secret: Option<String>,
    /// When the previous secret stops signing, Unix milliseconds.
    pub previous_secret_expires_at_ms: Option<u64>,
    /// Event types delivered to this endpoint; empty means all.
    pub event_types: Vec<String>,
    /// Disabled endpoints receive nothing: events appended meanwhile are skipped for them and
    /// their pending deliveries wait until re-enabled.
    pub enabled: bool,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field(
                "previous_secret",
                &self.previous_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "previous_secret_expires_at_ms",
                &self.previous_secret_expires_at_ms,
            )
            .field("event_types", &self.event_types)
            .field("enabled", &self.enabled)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

impl Endpoint {
    /// The secrets that sign a message at `now_ms`: the current one, then the previous one while
    /// its grace period lasts.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(prev), Some(exp)) = (&self.previous_secret, self.previous_secret_expires_at_ms)
        {
            if now_ms < exp {
                out.push(prev);
            }
        }
        out
    }

    /// Whether this endpoint subscribes to `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// What [`Webhooks::add_endpoint`] needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEndpoint {
    /// `https://...` (or `http://` for a loopback host).
    pub url: String,
    /// Event types to deliver; empty means all (see [`EVENT_TYPES`]).
    pub event_types: Vec<String>,
    /// A `whsec_<base64>` secret to use; `None` generates one.
    pub secret: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not delivered yet; will be (re)tried at `next_attempt_at_ms`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Retries gave up at the horizon (dead letter); see `last_error`.
    Dead,
}

impl DeliveryState {
    /// `pending`, `delivered` or `dead`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// One event to be delivered to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id (increasing in outbox order).
    pub id: i64,
    /// The `webhook-id` header value: `evt_{event_seq}_{endpoint_id}`.
    pub webhook_id: String,
    /// The event's sequence number in the event log.
    pub event_seq: u64,
    /// The event type, e.g. `payment_received`.
    pub event_type: String,
    /// The target endpoint.
    pub endpoint_id: i64,
    /// Pending, delivered or dead.
    pub state: DeliveryState,
    /// HTTP attempts made so far.
    pub attempts: u32,
    /// HTTP status of the last attempt, when one was received.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (`None` once delivered).
    pub last_error: Option<String>,
    /// When the delivery entered the outbox (the horizon counts from here), Unix ms.
    pub created_at_ms: u64,
    /// When the last attempt was made, Unix ms.
    pub last_attempt_at_ms: Option<u64>,
    /// When the next attempt is due (pending only), Unix ms.
    pub next_attempt_at_ms: Option<u64>,
    /// When it was delivered, Unix ms.
    pub delivered_at_ms: Option<u64>,
}

/// Filter for [`Webhooks::list_deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this endpoint.
    pub endpoint_id: Option<i64>,
    /// Pagination cursor: only ids greater than this.
    pub after_id: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: usize,
}

impl Default for DeliveryQuery {
    fn default() -> Self {
        Self {
            state: None,
            endpoint_id: None,
            after_id: None,
            limit: 100,
        }
    }
}

impl DeliveryQuery {
    /// Deliveries in `state`, oldest first.
    pub fn state(state: DeliveryState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }
}

/// Counts for a health report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries not yet delivered.
    pub pending: u64,
    /// Dead-lettered deliveries.
    pub dead: u64,
    /// Creation time of the oldest pending delivery, Unix ms.
    pub oldest_pending_at_ms: Option<u64>,
    /// Events in the log not yet moved into the outbox.
    pub events_behind: u64,
}

/// The outcome of [`Webhooks::send_test`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDelivery {
    /// The `webhook-id` sent (`test_...`).
    pub webhook_id: String,
    /// The 2xx status received.
    pub status: u16,
    /// Round-trip time.
    pub elapsed: Duration,
}

pub(crate) struct Inner {
    pub(crate) conn: SharedConn,
    pub(crate) config: WebhookConfig,
    pub(crate) client: reqwest::Client,
    pub(crate) live: std::sync::Mutex<tokio::sync::broadcast::Receiver<StoredEvent>>,
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) running: AtomicBool,
}

/// The webhook component: endpoint management, delivery inspection and the [`Dispatcher`].
/// Cheap to clone (shared state).
#[derive(Clone)]
pub struct Webhooks {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Opens the component on the event log's database, creating its tables if needed.
    ///
    /// # Errors
    /// [`WebhookError::InvalidConfig`] for out-of-range settings, [`WebhookError::Storage`] when
    /// the migration fails or the HTTP client cannot be built.
    pub fn open(log: &EventLog, config: WebhookConfig) -> Result<Self, WebhookError> {
        config.validate()?;
        let conn = log.conn().clone();
        store::migrate(&conn)?;
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lightkeeper-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Storage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                config,
                client,
                live: std::sync::Mutex::new(log.subscribe()),
                wake: tokio::sync::Notify::new(),
                running: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }

    /// Adds an endpoint. It receives events appended from now on (not older ones).
    ///
    /// # Errors
    /// [`WebhookError::InvalidUrl`], [`WebhookError::InsecureUrl`] (plain http to a non-loopback
    /// host), [`WebhookError::InvalidSecret`], [`WebhookError::UnknownEventType`],
    /// [`WebhookError::Storage`].
    pub fn add_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, WebhookError> {
        let url = endpoint::validate_url(&new.url)?;
        let event_types = endpoint::validate_event_types(&new.event_types)?;
        let secret = match new.secret {
            Some(s) => {
                signing::validate_secret(&s)?;
                s.trim().to_string()
            }
            None => generate_secret(),
        };
        let ep = store::insert_endpoint(&self.inner.conn, url.as_str(), &secret, &event_types)?;
        self.inner.wake.notify_one();
        Ok(ep)
    }

    /// All endpoints, by id.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn list_endpoints(&self) -> Result<Vec<Endpoint>, WebhookError> {
        store::list_endpoints(&self.inner.conn)
    }

    /// One endpoint.
    ///
    /// # Errors
    /// [`WebhookError::UnknownEndpoint`], [`WebhookError::Storage`].
    pub fn get_endpoint(&self, id: i64) -> Result<Endpoint, WebhookError> {
        store::get_endpoint(&store::lock(&self.inner.conn), id)
    }

    /// Removes an endpoint with all its deliveries (pending ones are dropped).
    ///
    /// # Errors
    /// [`WebhookError::UnknownEndpoint`], [`WebhookError::Storage`].
    pub fn remove_endpoint(&self, id: i64) -> Result<(), WebhookError> {
        store::remove_endpoint(&self.inner.conn, id)
    }

    /// Enables an endpoint: it receives events appended from now on, and its pending deliveries
    /// resume.
    ///
    /// # Errors
    /// [`WebhookError::UnknownEndpoint`], [`WebhookError::Storage`].
    pub fn enable_endpoint(&self, id: i64) -> Result<Endpoint, WebhookError> {
        let ep = store::set_enabled(&self.inner.conn, id, true)?;
        self.inner.wake.notify_one();
        Ok(ep)
    }

    /// Disables an endpoint: events appended while disabled are not delivered to it and its
    /// pending deliveries wait.
    ///
    /// # Errors
    /// [`WebhookError::UnknownEndpoint`], [`WebhookError::Storage`].
    pub fn disable_endpoint(&self, id: i64) -> Result<Endpoint, WebhookError> {
        store::set_enabled(&self.inner.conn, id, false)
    }

    /// Replaces an endpoint's secret with `new_secret` (or a generated one). The old secret keeps
    /// signing, next to the new one, for `grace` (default [`WebhookConfig::rotation_grace`]), so
    /// receivers can switch without rejecting anything. Rotating again during a grace period
    /// drops the oldest secret at once.
    ///
    /// # Errors
    /// [`WebhookError::InvalidSecret`], [`WebhookError::UnknownEndpoint`],
    /// [`WebhookError::Storage`].
    pub fn rotate_secret(
        &self,
        id: i64,
        new_secret: Option<String>,
        grace: Option<Duration>,
    ) -> Result<Endpoint, WebhookError> {
        let secret = match new_secret {
            Some(s) => {
                signing::validate_secret(&s)?;
                s.trim().to_string()
            }
            None => generate_secret(),
        };
        let grace = grace.unwrap_or(self.inner.config.rotation_grace);
        store::rotate_secret(&self.inner.conn, id, &secret, grace)
    }

    /// Deliveries matching `query`, oldest first.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, WebhookError> {
        store::list_deliveries(&self.inner.conn, query)
    }

    /// One delivery.
    ///
    /// # Errors
    /// [`WebhookError::UnknownDelivery`], [`WebhookError::Storage`].
    pub fn get_delivery(&self, id: i64) -> Result<Delivery, WebhookError> {
        store::get_delivery(&store::lock(&self.inner.conn), id)
    }

    /// Puts a dead-lettered delivery back in the queue with a fresh horizon (same `webhook-id`).
    ///
    /// # Errors
    /// [`WebhookError::UnknownDelivery`], [`WebhookError::NotDead`],
    /// [`WebhookError::Storage`].
    pub fn retry_delivery(&self, id: i64) -> Result<Delivery, WebhookError> {
        let d = store::retry_dead(&self.inner.conn, id)?;
        self.inner.wake.notify_one();
        Ok(d)
    }

    /// Pending and dead counts, for a health report.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn backlog(&self) -> Result<Backlog, WebhookError> {
        store::backlog(&self.inner.conn)
    }

    /// Moves events appended since the last call into the outbox (one transaction per batch of
    /// [`WebhookConfig::batch_size`]) and returns how many deliveries were created. The running
    /// [`Dispatcher`] does this by itself.
    ///
    /// # Errors
    /// [`WebhookError::Storage`].
    pub fn enqueue_new_events(&self) -> Result<usize, WebhookError> {
        let mut total = 0;
        loop {
            let (events, created) =
                store::enqueue_batch(&self.inner.conn, self.inner.config.batch_size)?;
            total += created;
            if events < self.inner.config.batch_size {
                return Ok(total);
            }
        }
    }

    /// Sends a synthetic `webhook.test` message to endpoint `id` now, signed like any delivery,
    /// and waits for the answer. Not stored in the outbox and not retried.
    ///
    /// # Errors
    /// [`WebhookError::DeliveryFailed`] (connection error, timeout or non-2xx answer, with the
    /// details), [`WebhookError::UnknownEndpoint`], [`WebhookError::Storage`].
    pub async fn send_test(&self, id: i64) -> Result<TestDelivery, WebhookError> {
        dispatcher::send_test(&self.inner, id).await
    }

    /// Starts the [`Dispatcher`] on the current Tokio runtime: it fills the outbox from the
    /// event log (woken by live events, polling as a fallback) and delivers pending deliveries,
    /// including those left over from before a restart.
    ///
    /// # Errors
    /// [`WebhookError::NoRuntime`] outside a Tokio runtime, [`WebhookError::AlreadyRunning`].
    pub fn start(&self) -> Result<Dispatcher, WebhookError> {
        dispatcher::start(self.inner.clone())
    }
}
