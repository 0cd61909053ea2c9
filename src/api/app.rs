//! Assembles and runs the merchant application around a started [`Node`]: event log, tokens,
//! rates, invoices, webhooks and the HTTP server. Used by the `merchant` example and the tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::auth::{Scope, TokenStore};
use super::config::AppConfig;
use super::invoices::MerchantInvoices;
use super::ApiContext;
use crate::backend::{EmbeddedBackend, LightningBackend};
use crate::breaker::BreakerConfig;
use crate::events::EventLog;
use crate::invoice::InvoiceConfig;
use crate::merchant::{Merchant, MerchantConfig};
use crate::rates::{RateAggregator, RateSource};
use crate::reliability::ReliabilityConfig;
use crate::webhook::{NewEndpoint, Webhooks};
use crate::Node;

/// A running application. Stop it with [`App::stop`].
pub struct App {
    /// Where the API and dashboard listen.
    pub addr: SocketAddr,
    /// The admin token minted on first start (no token existed); `None` afterwards.
    pub admin_token: Option<String>,
    /// The handlers' context.
    pub ctx: Arc<ApiContext>,
    /// The endpoint registered from `[webhooks] url` (id and secret), if any.
    pub configured_webhook: Option<(i64, String)>,
    /// The merchant domain: invoices, the node-event processor, webhooks, health.
    pub merchant: Arc<Merchant>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl App {
    /// Starts everything on the current Tokio runtime; `node` must be started and its events
    /// not consumed by anyone else (the app records them as domain events).
    ///
    /// # Errors
    /// A message naming the failing part (database, rates configuration, webhooks, bind).
    pub async fn start(node: Arc<Node>, config: AppConfig) -> Result<App, String> {
        let rates = RateAggregator::from_config(&config.rates_config())
            .map_err(|e| format!("invalid configuration: rates: {e}"))?;
        Self::start_with_rates(node, config, Arc::new(rates)).await
    }

    /// Like [`App::start`] with a given rate aggregator.
    ///
    /// # Errors
    /// As [`App::start`].
    pub async fn start_with_rates(
        node: Arc<Node>,
        config: AppConfig,
        rates: Arc<RateAggregator>,
    ) -> Result<App, String> {
        config.validate().map_err(|e| e.to_string())?;
        let path = node.database_path().to_path_buf();
        let conn = crate::db::open_connection(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let conn = Arc::new(Mutex::new(conn));
        let log = Arc::new(EventLog::open(conn.clone()).map_err(|e| format!("event log: {e}"))?);
        let tokens = TokenStore::open(conn).map_err(|e| format!("api tokens: {e}"))?;
        let admin_token = if tokens.is_empty() {
            Some(
                tokens
                    .create("admin", Scope::Admin)
                    .map_err(|e| format!("api tokens: {e}"))?
                    .1,
            )
        } else {
            None
        };
        let backend: Arc<dyn LightningBackend> = Arc::new(EmbeddedBackend::new(node.clone()));
        let rate_source: Arc<dyn RateSource> = rates.clone();
        let secs = std::time::Duration::from_secs;
        let rel = &config.reliability;
        let merchant_config = MerchantConfig {
            invoices: InvoiceConfig {
                default_expiry: secs(config.invoices.default_expiry_secs),
                min_expiry: secs(config.invoices.min_expiry_secs),
                max_expiry: secs(config.invoices.max_expiry_secs),
                ..InvoiceConfig::default()
            },
            reliability: ReliabilityConfig {
                call_timeout: secs(rel.backend_timeout_secs),
                retries: rel.retries,
                breaker: BreakerConfig {
                    failure_threshold: rel.breaker_failure_threshold,
                    open_for: secs(rel.breaker_open_secs),
                },
                ..ReliabilityConfig::default()
            },
            ..MerchantConfig::default()
        };
        let merchant = Merchant::new(backend, log.clone(), rate_source, merchant_config)
            .map_err(|e| format!("invalid configuration: invoices: {e}"))?;
        let webhooks =
            Webhooks::open(&log, config.webhook_config()).map_err(|e| format!("webhooks: {e}"))?;
        let mut configured_webhook = None;
        if !config.webhooks.url.is_empty() {
            let existing = webhooks
                .list_endpoints()
                .map_err(|e| format!("webhooks: {e}"))?
                .into_iter()
                .find(|e| e.url == config.webhooks.url);
            let ep = match existing {
                Some(e) => e,
                None => webhooks
                    .add_endpoint(NewEndpoint {
                        url: config.webhooks.url.clone(),
                        event_types: vec![],
                        secret: (!config.webhooks.secret.is_empty())
                            .then(|| config.webhooks.secret.clone()),
                    })
                    .map_err(|e| format!("invalid configuration: webhooks.url: {e}"))?,
            };
            configured_webhook = Some((ep.id, ep.secret));
        }
        let probe = rates.clone();
        let merchant = Arc::new(
            merchant
                .with_webhooks(webhooks.clone())
                .with_rates_age(move || probe.health().cached.iter().map(|c| c.age).max()),
        );
        merchant.start().map_err(|e| format!("merchant: {e}"))?;
        let invoices = Arc::new(MerchantInvoices::new(merchant.invoices().clone()));
        let listener =
            tokio::net::TcpListener::bind(config.api_listen().map_err(|e| e.to_string())?)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.api.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(ApiContext::new(
            node,
            log,
            invoices,
            Some(webhooks),
            Some(rates),
            tokens,
            config,
            rx.clone(),
        ));
        let mut stop_rx = rx;
        let server = tokio::spawn(super::serve(listener, ctx.clone(), async move {
            let _ = stop_rx.wait_for(|v| *v).await;
        }));
        Ok(App {
            addr,
            admin_token,
            ctx,
            configured_webhook,
            merchant,
            shutdown: tx,
            server,
        })
    }

    /// `http://ip:port` of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server (open streams end), the event recorder and the webhook dispatcher. The
    /// node itself is left running.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.server).await;
        self.merchant.stop().await;
    }
}
