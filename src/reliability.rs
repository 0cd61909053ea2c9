//! [`ReliableBackend`]: a [`LightningBackend`] wrapper that gives every call a timeout, retries
//! idempotent calls with exponential backoff, and stops calling a failing backend for a while
//! (a [`CircuitBreaker`]).
//!
//! | call | timeout | retried | breaker |
//! |---|---|---|---|
//! | `node_info`, `balances`, `list_channels`, `list_peers`, `lookup_invoice`, `fee_estimate_sat_per_vb` | yes | yes | yes |
//! | `connect_peer`, `settle_invoice`, `cancel_invoice` (idempotent by peer / preimage / hash) | yes | yes | yes |
//! | `create_invoice`, `pay_invoice`, `keysend`, `send_onchain`, `open_channel`, `close_channel`, `new_address` | yes | **no** | yes |
//! | `event_handled` | yes | no (a retried ack could skip an event) | no |
//! | `next_event` | no (it waits for the next event) | no | no |
//!
//! Only transient failures ([`BackendError::Unavailable`], which includes timeouts) are
//! retried and counted by the breaker: a rejected request proves the backend is up. While the
//! breaker is open, calls fail at once with [`BackendError::Unavailable`] naming the breaker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{
    BackendError, BackendEvent, BackendInvoice, Balances, ChannelInfo, CreatedInvoice, Hash32,
    InvoiceRequest, LightningBackend, NodeInfo, PeerInfo,
};
use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};

/// Timeouts, retries and breaker thresholds of a [`ReliableBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliabilityConfig {
    /// Limit of one attempt of one call (default 30 s).
    pub call_timeout: Duration,
    /// Extra attempts of an idempotent call after a transient failure (default 3).
    pub retries: u32,
    /// Delay before the first retry, doubled for each further one, with up to 50 % added at
    /// random (default 200 ms).
    pub backoff_initial: Duration,
    /// Longest delay between retries (default 5 s).
    pub backoff_max: Duration,
    /// The breaker around the backend.
    pub breaker: BreakerConfig,
}

impl Default for ReliabilityConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            retries: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Whether a call may be repeated after a failure whose outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

/// Counts a half-open trial call that was dropped before it finished as failed, so the breaker
/// does not stay half-open forever.
struct TrialGuard<'a> {
    breaker: &'a CircuitBreaker,
    done: bool,
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if !self.done && self.breaker.state() == BreakerState::HalfOpen {
            self.breaker.record_failure();
        }
    }
}

/// A [`LightningBackend`] with timeouts, retries of idempotent calls and a circuit breaker.
pub struct ReliableBackend {
    inner: Arc<dyn LightningBackend>,
    breaker: CircuitBreaker,
    config: ReliabilityConfig,
}

impl ReliableBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn LightningBackend>, config: ReliabilityConfig) -> Self {
        Self {
            inner,
            breaker: CircuitBreaker::new("lightning_backend", config.breaker),
            config,
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn LightningBackend> {
        &self.inner
    }

    /// The breaker's state (for health reports and metrics).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The configuration.
    pub fn config(&self) -> &ReliabilityConfig {
        &self.config
    }

    /// One `node_info` attempt through the breaker and timeout, without retries (for health
    /// checks, which should answer quickly).
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the breaker is open, the call times out or the
    /// backend is down; the backend's own errors otherwise.
    pub async fn probe(&self) -> Result<NodeInfo, BackendError> {
        self.attempt("node_info", self.inner.node_info()).await
    }

    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .config
            .backoff_initial
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.config.backoff_max);
        let half_ms = (base.as_millis() / 2).min(u64::MAX as u128) as u64;
        let jitter = Duration::from_millis(rand::random::<u64>() % (half_ms + 1));
        (base + jitter).min(self.config.backoff_max)
    }

    /// One attempt: breaker check, timeout, outcome recorded.
    async fn attempt<T, F>(&self, what: &str, fut: F) -> Result<T, BackendError>
    where
        F: Future<Output = Result<T, BackendError>>,
    {
        if !self.breaker.allow() {
            return Err(BackendError::Unavailable(format!(
                "{what}: circuit breaker {} is open after repeated failures; retry in {} s",
                self.breaker.name(),
                self.config.breaker.open_for.as_secs()
            )));
        }
        let mut guard = TrialGuard {
            breaker: &self.breaker,
            done: false,
        };
        let r = match tokio::time::timeout(self.config.call_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unavailable(format!(
                "{what} timed out after {} ms",
                self.config.call_timeout.as_millis()
            ))),
        };
        match &r {
            Err(e) if e.is_transient() => self.breaker.record_failure(),
            _ => self.breaker.record_success(),
        }
        guard.done = true;
        r
    }

    /// Runs `call` through [`Self::attempt`], retrying transient failures of idempotent calls.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        idempotent: Idempotent,
        mut call: F,
    ) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let mut retry = 0;
        loop {
            match self.attempt(what, call()).await {
                Err(e)
                    if e.is_transient()
                        && idempotent == Idempotent::Yes
                        && retry < self.config.retries
                        && self.breaker.state() == BreakerState::Closed =>
                {
                    let delay = self.backoff(retry);
                    log::debug!("{what} failed ({e}); retry {} in {delay:?}", retry + 1);
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                r => return r,
            }
        }
    }
}

#[async_trait]
impl LightningBackend for ReliableBackend {
    async fn node_info(&self) -> Result<NodeInfo, BackendError> {
        self.call("node_info", Idempotent::Yes, || self.inner.node_info())
            .await
    }

    async fn balances(&self) -> Result<Balances, BackendError> {
        self.call("balances", Idempotent::Yes, || self.inner.balances())
            .await
    }

    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, BackendError> {
        self.call("list_channels", Idempotent::Yes, || {
            self.inner.list_channels()
        })
        .await
    }

    async fn list_peers(&self) -> Result<Vec<PeerInfo>, BackendError> {
        self.call("list_peers", Idempotent::Yes, || self.inner.list_peers())
            .await
    }

    async fn connect_peer(&self, node_id: &str, address: &str) -> Result<(), BackendError> {
        self.call("connect_peer", Idempotent::Yes, || {
            self.inner.connect_peer(node_id, address)
        })
        .await
    }

    async fn open_channel(
        &self,
        node_id: &str,
        address: &str,
        amount_sat: u64,
        push_msat: u64,
        public: bool,
    ) -> Result<String, BackendError> {
        self.call("open_channel", Idempotent::No, || {
            self.inner
                .open_channel(node_id, address, amount_sat, push_msat, public)
        })
        .await
    }

    async fn close_channel(&self, channel_ref: &str, force: bool) -> Result<(), BackendError> {
        self.call("close_channel", Idempotent::No, || {
            self.inner.close_channel(channel_ref, force)
        })
        .await
    }

    async fn create_invoice(&self, req: InvoiceRequest) -> Result<CreatedInvoice, BackendError> {
        self.call("create_invoice", Idempotent::No, || {
            self.inner.create_invoice(req.clone())
        })
        .await
    }

    async fn settle_invoice(&self, preimage: Hash32) -> Result<(), BackendError> {
        self.call("settle_invoice", Idempotent::Yes, || {
            self.inner.settle_invoice(preimage)
        })
        .await
    }

    async fn cancel_invoice(&self, payment_hash: Hash32) -> Result<(), BackendError> {
        self.call("cancel_invoice", Idempotent::Yes, || {
            self.inner.cancel_invoice(payment_hash)
        })
        .await
    }

    async fn lookup_invoice(
        &self,
        payment_hash: Hash32,
    ) -> Result<Option<BackendInvoice>, BackendError> {
        self.call("lookup_invoice", Idempotent::Yes, || {
            self.inner.lookup_invoice(payment_hash)
        })
        .await
    }

    async fn pay_invoice(
        &self,
        bolt11: &str,
        amount_msat: Option<u64>,
        max_fee_msat: Option<u64>,
    ) -> Result<Hash32, BackendError> {
        self.call("pay_invoice", Idempotent::No, || {
            self.inner.pay_invoice(bolt11, amount_msat, max_fee_msat)
        })
        .await
    }

    async fn keysend(&self, node_id: &str, amount_msat: u64) -> Result<Hash32, BackendError> {
        self.call("keysend", Idempotent::No, || {
            self.inner.keysend(node_id, amount_msat)
        })
        .await
    }

    async fn new_address(&self) -> Result<String, BackendError> {
        self.call("new_address", Idempotent::No, || self.inner.new_address())
            .await
    }

    async fn send_onchain(
        &self,
        address: &str,
        amount_sat: Option<u64>,
        sat_per_vb: Option<u64>,
    ) -> Result<String, BackendError> {
        self.call("send_onchain", Idempotent::No, || {
            self.inner.send_onchain(address, amount_sat, sat_per_vb)
        })
        .await
    }

    async fn fee_estimate_sat_per_vb(&self, target_blocks: u16) -> Result<u64, BackendError> {
        self.call("fee_estimate", Idempotent::Yes, || {
            self.inner.fee_estimate_sat_per_vb(target_blocks)
        })
        .await
    }

    async fn next_event(&self) -> Result<BackendEvent, BackendError> {
        self.inner.next_event().await
    }

    async fn event_handled(&self) -> Result<(), BackendError> {
        match tokio::time::timeout(self.config.call_timeout, self.inner.event_handled()).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unavailable(format!(
                "event_handled timed out after {} ms",
                self.config.call_timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A backend whose every call fails (or hangs) a scripted number of times, counting calls.
    /// Only what the wrapper needs is scripted; the rest is unreachable in these tests.
    struct Scripted {
        calls: AtomicU32,
        failures: u32,
        hang: bool,
    }

    impl Scripted {
        fn new(failures: u32, hang: bool) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicU32::new(0),
                failures,
                hang,
            })
        }
        async fn outcome(&self) -> Result<(), BackendError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if n < self.failures {
                Err(BackendError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl LightningBackend for Scripted {
        async fn node_info(&self) -> Result<NodeInfo, BackendError> {
            self.outcome().await?;
            Ok(NodeInfo {
                node_id: "02".into(),
                network: "regtest".into(),
                addresses: vec![],
                last_chain_sync_unix: None,
            })
        }
        async fn balances(&self) -> Result<Balances, BackendError> {
            unreachable!()
        }
        async fn list_channels(&self) -> Result<Vec<ChannelInfo>, BackendError> {
            unreachable!()
        }
        async fn list_peers(&self) -> Result<Vec<PeerInfo>, BackendError> {
            unreachable!()
        }
        async fn connect_peer(&self, _: &str, _: &str) -> Result<(), BackendError> {
            unreachable!()
        }
        async fn open_channel(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: u64,
            _: bool,
        ) -> Result<String, BackendError> {
            unreachable!()
        }
        async fn close_channel(&self, _: &str, _: bool) -> Result<(), BackendError> {
            unreachable!()
        }
        async fn create_invoice(&self, _: InvoiceRequest) -> Result<CreatedInvoice, BackendError> {
            self.outcome().await?;
            Ok(CreatedInvoice {
                bolt11: "lnbcrt1".into(),
                payment_hash: Hash32([1; 32]),
            })
        }
        async fn settle_invoice(&self, _: Hash32) -> Result<(), BackendError> {
            unreachable!()
        }
        async fn cancel_invoice(&self, _: Hash32) -> Result<(), BackendError> {
            unreachable!()
        }
        async fn lookup_invoice(&self, _: Hash32) -> Result<Option<BackendInvoice>, BackendError> {
            self.outcome().await?;
            Err(BackendError::Rejected("bad hash".into()))
        }
        async fn pay_invoice(
            &self,
            _: &str,
            _: Option<u64>,
            _: Option<u64>,
        ) -> Result<Hash32, BackendError> {
            self.outcome().await?;
            Ok(Hash32([2; 32]))
        }
        async fn keysend(&self, _: &str, _: u64) -> Result<Hash32, BackendError> {
            unreachable!()
        }
        async fn new_address(&self) -> Result<String, BackendError> {
            unreachable!()
        }
        async fn send_onchain(
            &self,
            _: &str,
            _: Option<u64>,
            _: Option<u64>,
        ) -> Result<String, BackendError> {
            unreachable!()
        }
        async fn fee_estimate_sat_per_vb(&self, _: u16) -> Result<u64, BackendError> {
            unreachable!()
        }
        async fn next_event(&self) -> Result<BackendEvent, BackendError> {
            unreachable!()
        }
        async fn event_handled(&self) -> Result<(), BackendError> {
            unreachable!()
        }
    }

    fn config(threshold: u32) -> ReliabilityConfig {
        ReliabilityConfig {
            call_timeout: Duration::from_millis(50),
            retries: 2,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            breaker: BreakerConfig {
                failure_threshold: threshold,
                open_for: Duration::from_millis(200),
            },
        }
    }

    #[tokio::test]
    async fn reads_are_retried_writes_are_not() {
        let inner = Scripted::new(2, false);
        let b = ReliableBackend::new(inner.clone(), config(10));
        b.node_info().await.expect("third attempt succeeds");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);

        let inner = Scripted::new(1, false);
        let b = ReliableBackend::new(inner.clone(), config(10));
        let e = b.pay_invoice("lnbcrt1", None, None).await.unwrap_err();
        assert!(e.is_transient());
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            1,
            "payments never retried"
        );
        let req = InvoiceRequest {
            amount_msat: Some(1),
            description: String::new(),
            expiry_secs: 60,
            payment_hash: None,
        };
        b.create_invoice(req).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);

        // A rejection is final and proves the backend is up.
        let inner = Scripted::new(0, false);
        let b = ReliableBackend::new(inner.clone(), config(1));
        let e = b.lookup_invoice(Hash32([0; 32])).await.unwrap_err();
        assert!(matches!(e, BackendError::Rejected(_)));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(b.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn timeouts_open_the_breaker_then_a_trial_closes_it() {
        let inner = Scripted::new(0, true);
        let b = ReliableBackend::new(inner.clone(), config(3));
        let e = b.node_info().await.unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        // Three attempts (1 + 2 retries) of 50 ms each opened the breaker.
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
        assert_eq!(b.breaker_state(), BreakerState::Open);
        let e = b.node_info().await.unwrap_err();
        assert!(e.to_string().contains("circuit breaker"), "{e}");
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            3,
            "refused without calling"
        );

        // After the open period a trial goes through; success closes the breaker.
        let inner = Scripted::new(3, false);
        let b = ReliableBackend::new(inner.clone(), config(3));
        assert!(b.node_info().await.is_err());
        assert_eq!(b.breaker_state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(b.breaker_state(), BreakerState::HalfOpen);
        b.probe().await.expect("trial succeeds");
        assert_eq!(b.breaker_state(), BreakerState::Closed);
    }
}
