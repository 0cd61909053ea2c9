//! [`Merchant`]: the merchant domain assembled and running — the [`InvoiceService`], the
//! [`EventLog`], the backend behind a [`ReliableBackend`], and background tasks that turn the
//! backend's events into invoice transitions and domain events and expire overdue invoices.
//!
//! ```no_run
//! # async fn demo(node: std::sync::Arc<lightkeeper::Node>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use lightkeeper::invoice::{InvoiceAmount, NewInvoice};
//! use lightkeeper::merchant::{Merchant, MerchantConfig};
//! use lightkeeper::rates::{RateAggregator, RatesConfig};
//!
//! let rates = Arc::new(RateAggregator::from_config(&RatesConfig::default())?);
//! let merchant = Merchant::open_embedded(node, rates.clone(), MerchantConfig::default())?
//!     .with_rates_age(move || rates.health().cached.iter().map(|c| c.age).max());
//! merchant.start()?;
//! let amount = InvoiceAmount::Fiat { amount: "500.00".parse()?, currency: "EUR".into() };
//! let invoice = merchant
//!     .invoices()
//!     .create(NewInvoice::new(amount, "Invoice INV-001").with_external_ref("INV-001"))
//!     .await?;
//! println!("pay {} ({})", invoice.bolt11, invoice.id);
//! println!("{:?}", merchant.health().await);
//! merchant.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Event processing
//!
//! The processor loops `next_event` -> apply -> `event_handled`. Delivery is at least once: an
//! event applied but not yet acknowledged when the process stops is delivered again after the
//! restart, so every application is idempotent — invoice transitions check the current status
//! in the same transaction that appends the event, and the other events (payments sent or
//! failed, channels) are recorded under a key in `merchant_applied_events` in that transaction.
//! A transient failure (database busy, backend unavailable) is retried with backoff before the
//! event is acknowledged; nothing is skipped.
//!
//! # Webhooks
//!
//! Webhook delivery consumes the [`EventLog`] with its own cursor
//! ([`EventLog::read_after`] / [`EventLog::subscribe`]). Open [`Webhooks`] on
//! [`Merchant::events`] and hand it over with [`Merchant::with_webhooks`]: the merchant then
//! starts and stops its [`Dispatcher`] and reports its backlog in [`Merchant::health`]. A
//! dispatcher run elsewhere can still report its backlog with
//! [`Merchant::with_webhook_backlog`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::backend::{BackendError, BackendEvent, EmbeddedBackend, LightningBackend};
use crate::breaker::BreakerState;
use crate::events::{lock, rfc3339_now, DomainEvent, EventLog};
use crate::invoice::{InvoiceConfig, InvoiceError, InvoiceService};
use crate::rates::RateSource;
use crate::reliability::{ReliabilityConfig, ReliableBackend};
use crate::webhook::{Backlog, Dispatcher, Webhooks};

const MIGRATIONS: &[&str] = &["CREATE TABLE merchant_applied_events (
        key TEXT PRIMARY KEY NOT NULL,
        seq INTEGER NOT NULL,
        applied_at INTEGER NOT NULL
    );"];

/// Settings of a [`Merchant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerchantConfig {
    /// Invoice expiry bounds and sweep interval.
    pub invoices: InvoiceConfig,
    /// Timeouts, retries and breaker around the backend.
    pub reliability: ReliabilityConfig,
    /// A chain sync older than this makes [`HealthReport::healthy`] false (default 10 min).
    pub max_chain_sync_age: Duration,
    /// First delay before re-trying a failed event application or event fetch; doubled up to
    /// 30 s (default 250 ms).
    pub event_retry_delay: Duration,
}

impl Default for MerchantConfig {
    fn default() -> Self {
        Self {
            invoices: InvoiceConfig::default(),
            reliability: ReliabilityConfig::default(),
            max_chain_sync_age: Duration::from_secs(600),
            event_retry_delay: Duration::from_millis(250),
        }
    }
}

/// Why a merchant operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum MerchantError {
    /// An invoice operation failed (validation, state, rates...); see [`InvoiceError`].
    Invoice(InvoiceError),
    /// The Lightning backend failed.
    Backend(BackendError),
    /// The database failed.
    Storage(String),
    /// [`Merchant::start`] was called outside a Tokio runtime; call it from async code or
    /// inside `Runtime::enter`.
    NoRuntime,
    /// The webhook dispatcher could not start (e.g. it already runs elsewhere).
    Webhook(crate::webhook::WebhookError),
}

impl MerchantError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            MerchantError::Invoice(e) => e.is_transient(),
            MerchantError::Backend(e) => e.is_transient(),
            MerchantError::Storage(_) => true,
            MerchantError::NoRuntime | MerchantError::Webhook(_) => false,
        }
    }
}

impl std::fmt::Display for MerchantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MerchantError::Invoice(e) => write!(f, "{e}"),
            MerchantError::Backend(e) => write!(f, "{e}"),
            MerchantError::Storage(m) => write!(f, "merchant storage failed: {m}"),
            MerchantError::NoRuntime => write!(
                f,
                "the merchant's background tasks need a Tokio runtime: call start() from async code"
            ),
            MerchantError::Webhook(e) => write!(f, "webhooks: {e}"),
        }
    }
}

impl std::error::Error for MerchantError {}

impl From<InvoiceError> for MerchantError {
    fn from(e: InvoiceError) -> Self {
        MerchantError::Invoice(e)
    }
}
impl From<BackendError> for MerchantError {
    fn from(e: BackendError) -> Self {
        MerchantError::Backend(e)
    }
}
impl From<rusqlite::Error> for MerchantError {
    fn from(e: rusqlite::Error) -> Self {
        MerchantError::Storage(e.to_string())
    }
}
impl From<crate::Error> for MerchantError {
    fn from(e: crate::Error) -> Self {
        MerchantError::Storage(e.to_string())
    }
}

/// The backend's part of a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// Whether `node_info` answered just now.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// The breaker around the backend.
    pub breaker: BreakerState,
    /// The node id, when reachable.
    pub node_id: Option<String>,
}

/// What [`Merchant::health`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Backend reachable, breaker closed, chain synced within
    /// [`MerchantConfig::max_chain_sync_age`], and the event processor running.
    pub healthy: bool,
    /// The backend.
    pub backend: BackendHealth,
    /// Time since the backend's last chain sync (`None`: never synced or unknown).
    pub chain_sync_age: Option<Duration>,
    /// Age of the oldest cached exchange rate, when a probe is set
    /// ([`Merchant::with_rates_age`]) and a rate is cached.
    pub rates_age: Option<Duration>,
    /// Webhook outbox counts, when webhooks are set ([`Merchant::with_webhooks`] or
    /// [`Merchant::with_webhook_backlog`]).
    pub webhook_backlog: Option<Backlog>,
    /// Whether the background event processor runs.
    pub processor_running: bool,
    /// The newest event log sequence number.
    pub last_event_seq: u64,
}

type RatesAgeProbe = Arc<dyn Fn() -> Option<Duration> + Send + Sync>;
type BacklogProbe = Arc<dyn Fn() -> Option<Backlog> + Send + Sync>;

struct Core {
    backend: Arc<ReliableBackend>,
    invoices: Arc<InvoiceService>,
    events: Arc<EventLog>,
    config: MerchantConfig,
    processing: AtomicBool,
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dispatcher: Option<Dispatcher>,
}

/// The merchant domain over one Lightning backend. See the [module docs](self).
pub struct Merchant {
    core: Arc<Core>,
    rates_age: Option<RatesAgeProbe>,
    webhook_backlog: Option<BacklogProbe>,
    /// The webhook component, started and stopped with the merchant.
    webhooks: Option<Webhooks>,
    running: Mutex<Option<Running>>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Merchant {
    /// Assembles the domain over `backend` (wrapped in a [`ReliableBackend`]), the event log
    /// (whose connection also holds the invoices) and a rate source. Creates the tables if
    /// needed. Nothing runs until [`Merchant::start`].
    ///
    /// # Errors
    /// [`MerchantError::Invoice`] with [`InvoiceError::InvalidConfig`] for unusable invoice
    /// bounds; [`MerchantError::Storage`].
    pub fn new(
        backend: Arc<dyn LightningBackend>,
        events: Arc<EventLog>,
        rates: Arc<dyn RateSource>,
        config: MerchantConfig,
    ) -> Result<Self, MerchantError> {
        crate::db::migrate(&lock(events.conn()), "merchant", MIGRATIONS)?;
        let backend = Arc::new(ReliableBackend::new(backend, config.reliability));
        let invoices = Arc::new(InvoiceService::new(
            backend.clone(),
            events.clone(),
            rates,
            config.invoices,
        )?);
        Ok(Self {
            core: Arc::new(Core {
                backend,
                invoices,
                events,
                config,
                processing: AtomicBool::new(false),
            }),
            rates_age: None,
            webhook_backlog: None,
            webhooks: None,
            running: Mutex::new(None),
        })
    }

    /// [`Merchant::new`] over the embedded node: opens a connection to the node's database and
    /// the event log on it.
    ///
    /// # Errors
    /// As [`Merchant::new`]; [`MerchantError::Storage`] when the database cannot be opened.
    pub fn open_embedded(
        node: Arc<crate::Node>,
        rates: Arc<dyn RateSource>,
        config: MerchantConfig,
    ) -> Result<Self, MerchantError> {
        let conn = crate::db::open_connection(node.database_path())?;
        let events = Arc::new(EventLog::open(Arc::new(Mutex::new(conn)))?);
        Self::new(Arc::new(EmbeddedBackend::new(node)), events, rates, config)
    }

    /// Reports `probe()` as [`HealthReport::rates_age`], e.g. the oldest cached rate of a
    /// [`crate::rates::RateAggregator`]: `move || agg.health().cached.iter().map(|c| c.age).max()`.
    pub fn with_rates_age(
        mut self,
        probe: impl Fn() -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.rates_age = Some(Arc::new(probe));
        self
    }

    /// Reports `probe()` as [`HealthReport::webhook_backlog`], e.g.
    /// `move || webhooks.backlog().ok()`.
    pub fn with_webhook_backlog(
        mut self,
        probe: impl Fn() -> Option<Backlog> + Send + Sync + 'static,
    ) -> Self {
        self.webhook_backlog = Some(Arc::new(probe));
        self
    }

    /// Runs `webhooks` with the merchant: [`Merchant::start`] starts its [`Dispatcher`],
    /// [`Merchant::stop`] shuts it down, and [`Merchant::health`] reports its backlog (unless
    /// [`Merchant::with_webhook_backlog`] set another probe). Open it on [`Merchant::events`]
    /// so it sees the live stream.
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    /// The webhook component, when set with [`Merchant::with_webhooks`].
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.webhooks.as_ref()
    }

    /// The invoice service.
    pub fn invoices(&self) -> &Arc<InvoiceService> {
        &self.core.invoices
    }

    /// The domain event log (replay with [`EventLog::read_after`], live with
    /// [`EventLog::subscribe`]).
    pub fn events(&self) -> &Arc<EventLog> {
        &self.core.events
    }

    /// The backend as the domain calls it (timeouts, retries, breaker).
    pub fn backend(&self) -> &Arc<ReliableBackend> {
        &self.core.backend
    }

    /// Starts the event processor, the expiry sweep and the webhook dispatcher (if any) on the
    /// current Tokio runtime. Does nothing if they already run. The backend's events must not
    /// be consumed by anyone else.
    ///
    /// # Errors
    /// [`MerchantError::NoRuntime`] outside a Tokio runtime; [`MerchantError::Webhook`] when
    /// the dispatcher cannot start (nothing is started then).
    pub fn start(&self) -> Result<(), MerchantError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| MerchantError::NoRuntime)?;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return Ok(());
        }
        let dispatcher = match &self.webhooks {
            Some(w) => Some(w.start().map_err(MerchantError::Webhook)?),
            None => None,
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        self.core.processing.store(true, Ordering::SeqCst);
        let tasks = vec![
            handle.spawn(process_events(self.core.clone(), rx.clone())),
            handle.spawn(sweep(self.core.clone(), rx)),
        ];
        *running = Some(Running {
            stop,
            tasks,
            dispatcher,
        });
        log::info!("merchant started");
        Ok(())
    }

    /// Stops the background tasks, letting an event application or sweep in progress finish.
    /// Unacknowledged events are delivered again on the next start. Does nothing if stopped.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = running {
            let _ = r.stop.send(true);
            for t in r.tasks {
                if let Err(e) = t.await {
                    log::error!("merchant task ended abnormally: {e}");
                }
            }
            if let Some(d) = r.dispatcher {
                d.shutdown().await;
            }
            self.core.processing.store(false, Ordering::SeqCst);
            log::info!("merchant stopped");
        }
    }

    /// Whether the background tasks run.
    pub fn is_running(&self) -> bool {
        self.core.processing.load(Ordering::SeqCst)
    }

    /// Applies one backend event as the processor does (idempotent; exposed for replay tools
    /// and tests): invoice accepted/settled -> invoice transitions with their events; payment
    /// succeeded/failed -> `payment_sent` / `payment_failed`; channel opened/closed -> channel
    /// events; anything else is ignored.
    ///
    /// # Errors
    /// [`MerchantError::Storage`], or the invoice service's errors; transient ones
    /// ([`MerchantError::is_transient`]) are retried by the processor.
    pub async fn apply(&self, event: &BackendEvent) -> Result<(), MerchantError> {
        self.core.apply(event).await
    }

    /// Backend reachability and breaker, chain sync age, rates age and webhook backlog.
    pub async fn health(&self) -> HealthReport {
        let core = &self.core;
        let info = core.backend.probe().await;
        let now = now_unix();
        let chain_sync_age = info
            .as_ref()
            .ok()
            .and_then(|i| i.last_chain_sync_unix)
            .map(|t| Duration::from_secs(now.saturating_sub(t)));
        let backend = BackendHealth {
            reachable: info.is_ok(),
            error: info.as_ref().err().map(|e| e.to_string()),
            breaker: core.backend.breaker_state(),
            node_id: info.as_ref().ok().map(|i| i.node_id.clone()),
        };
        let processor_running = self.is_running();
        let healthy = backend.reachable
            && backend.breaker == BreakerState::Closed
            && chain_sync_age.is_some_and(|a| a <= core.config.max_chain_sync_age)
            && processor_running;
        HealthReport {
            healthy,
            backend,
            chain_sync_age,
            rates_age: self.rates_age.as_ref().and_then(|p| p()),
            webhook_backlog: match (&self.webhook_backlog, &self.webhooks) {
                (Some(probe), _) => probe(),
                (None, Some(w)) => w.backlog().ok(),
                (None, None) => None,
            },
            processor_running,
            last_event_seq: core.events.last_seq().unwrap_or(0),
        }
    }
}

impl Drop for Merchant {
    fn drop(&mut self) {
        if let Some(r) = self
            .running
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            // The tasks see the signal and end on their own.
            let _ = r.stop.send(true);
        }
    }
}

impl Core {
    async fn apply(&self, event: &BackendEvent) -> Result<(), MerchantError> {
        let ts = rfc3339_now;
        match event {
            BackendEvent::InvoiceAccepted {
                payment_hash,
                amount_msat,
            } => {
                self.invoices
                    .on_accepted(*payment_hash, *amount_msat)
                    .await?;
            }
            BackendEvent::HeldPaymentTimedOut { payment_hash } => {
                self.invoices.on_hold_timed_out(*payment_hash)?;
            }
            BackendEvent::InvoiceSettled {
                payment_hash,
                amount_msat,
            } => {
                self.invoices.on_settled(*payment_hash, *amount_msat)?;
            }
            BackendEvent::PaymentSucceeded {
                payment_hash,
                fee_msat,
                amount_msat,
                ..
            } => self.record_once(
                Some(format!("payment_sent:{payment_hash}")),
                DomainEvent::PaymentSent {
                    payment_hash: payment_hash.to_string(),
                    amount_msat: *amount_msat,
                    fee_msat: *fee_msat,
                    timestamp: ts(),
                },
            )?,
            BackendEvent::PaymentFailed {
                payment_hash,
                reason,
            } => self.record_once(
                payment_hash.map(|h| format!("payment_failed:{h}")),
                DomainEvent::PaymentFailed {
                    payment_hash: payment_hash.map(|h| h.to_string()),
                    reason: reason.clone(),
                    timestamp: ts(),
                },
            )?,
            BackendEvent::ChannelOpened {
                channel_id,
                counterparty,
            } => self.record_once(
                Some(format!("channel_opened:{channel_id}")),
                DomainEvent::ChannelOpened {
                    channel_id: channel_id.clone(),
                    counterparty: counterparty.clone(),
                    timestamp: ts(),
                },
            )?,
            BackendEvent::ChannelClosed {
                channel_id,
                counterparty,
                reason,
            } => self.record_once(
                Some(format!("channel_closed:{channel_id}")),
                DomainEvent::ChannelClosed {
                    channel_id: channel_id.clone(),
                    counterparty: counterparty.clone(),
                    reason: reason.clone(),
                    timestamp: ts(),
                },
            )?,
            BackendEvent::Other(what) => log::debug!("merchant ignores backend event {what}"),
        }
        Ok(())
    }

    /// Appends `event` unless `key` was recorded before; the key is recorded in the same
    /// transaction. Without a key the event is always appended.
    fn record_once(&self, key: Option<String>, event: DomainEvent) -> Result<(), MerchantError> {
        let stored = {
            let mut conn = lock(self.events.conn());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(k) = &key {
                let seen: Option<i64> = tx
                    .query_row(
                        "SELECT seq FROM merchant_applied_events WHERE key = ?1",
                        params![k],
                        |r| r.get(0),
                    )
                    .optional()?;
                if seen.is_some() {
                    return Ok(());
                }
            }
            let stored = self.events.append_in(&tx, &event)?;
            if let Some(k) = &key {
                tx.execute(
                    "INSERT INTO merchant_applied_events (key, seq, applied_at) VALUES (?1, ?2, ?3)",
                    params![k, stored.seq as i64, now_unix() as i64],
                )?;
            }
            tx.commit()?;
            stored
        };
        self.events.publish([stored]);
        Ok(())
    }
}

/// Sleeps `delay` unless asked to stop first; returns whether to stop.
async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => true,
        _ = tokio::time::sleep(delay) => *stop.borrow(),
    }
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

async fn process_events(core: Arc<Core>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let initial = core.config.event_retry_delay;
    let mut delay = initial;
    loop {
        if *stop.borrow() {
            break;
        }
        let next = tokio::select! {
            _ = stop.changed() => break,
            r = core.backend.next_event() => r,
        };
        let event = match next {
            Ok(e) => e,
            Err(e) => {
                log::warn!("cannot fetch the next backend event: {e}");
                if sleep_or_stop(&mut stop, delay).await {
                    break;
                }
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            }
        };
        loop {
            match core.apply(&event).await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    log::warn!("applying backend event {event:?} failed, will retry: {e}");
                    if sleep_or_stop(&mut stop, delay).await {
                        // Not acknowledged: delivered again after the restart.
                        core.processing.store(false, Ordering::SeqCst);
                        return;
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(e) => {
                    log::error!("backend event {event:?} cannot be applied, skipping it: {e}");
                    break;
                }
            }
        }
        delay = initial;
        if let Err(e) = core.backend.event_handled().await {
            // The event comes again and is applied idempotently.
            log::warn!("cannot acknowledge backend event: {e}");
            if sleep_or_stop(&mut stop, delay).await {
                break;
            }
        }
    }
    core.processing.store(false, Ordering::SeqCst);
}

async fn sweep(core: Arc<Core>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(core.invoices.config().sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        match core.invoices.expire_due().await {
            Ok(v) if !v.is_empty() => log::info!("expired {} invoice(s)", v.len()),
            Ok(_) => {}
            Err(e) => log::warn!("invoice expiry sweep failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merchant's futures must be `Send` so servers can spawn them.
    #[allow(dead_code)]
    fn futures_are_send(m: &Merchant) {
        fn is_send<T: Send>(_: T) {}
        is_send(m.apply(&BackendEvent::Other(String::new())));
        is_send(m.health());
        is_send(m.stop());
    }
}
