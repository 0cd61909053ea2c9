//! The merchant REST API, dashboard and their building blocks, served by the `merchant` example
//! binary (`cargo run --example merchant`) and testable in-process.
//!
//! * [`router`] builds the axum router over an [`ApiContext`]: JSON endpoints under `/v1`,
//!   `/health`, `/metrics` (Prometheus), `/v1/openapi.json` (generated with utoipa from the
//!   handlers themselves) and the dashboard at `/`.
//! * [`auth`]: bearer tokens with scopes (`read` < `invoices` < `admin`), stored as SHA-256
//!   hashes, compared in constant time.
//! * [`config`]: the binary's TOML + `LIGHTKEEPER_*` configuration.
//! * [`invoices`]: the invoice seam ([`invoices::InvoiceProvider`]) and its implementation over
//!   the node.
//! * Errors are JSON `{code, message}` ([`error::ErrorBody`]); malformed input is a 4xx.
//!
//! See `docs/merchant-binary.md` for the endpoint list with examples.

pub mod app;
pub mod auth;
pub mod config;
mod dashboard;
pub mod error;
pub mod invoices;
mod metrics;
pub mod qr;
pub mod routes;
pub mod views;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::events::EventLog;
use crate::rates::RateAggregator;
use crate::webhook::{DeliveryQuery, DeliveryState, Webhooks};
use crate::Node;

use self::auth::TokenStore;
use self::config::AppConfig;
use self::error::{ApiError, ApiResult};
use self::invoices::InvoiceProvider;
use self::views::*;

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// 4xx answers.
    pub client_errors: AtomicU64,
    /// 5xx answers.
    pub server_errors: AtomicU64,
    /// 502/503 answers: the node or another backend failed.
    pub backend_errors: AtomicU64,
}

/// Everything the handlers use.
pub struct ApiContext {
    /// The Lightning node.
    pub node: Arc<Node>,
    /// The domain event log (replay and SSE).
    pub events: Arc<EventLog>,
    /// The invoice service.
    pub invoices: Arc<dyn InvoiceProvider>,
    /// Webhooks, when enabled.
    pub webhooks: Option<Webhooks>,
    /// The rate aggregator, for health and metrics.
    pub rates: Option<Arc<RateAggregator>>,
    /// API tokens.
    pub tokens: TokenStore,
    /// The effective configuration (shown masked).
    pub config: AppConfig,
    /// When the API started.
    pub started: Instant,
    /// Becomes `true` at shutdown: live streams end so the server can stop.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// HTTP counters.
    pub http: HttpCounters,
    openapi: OnceLock<String>,
}

impl ApiContext {
    /// A context; `shutdown` should flip to `true` before the server is asked to stop.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Arc<Node>,
        events: Arc<EventLog>,
        invoices: Arc<dyn InvoiceProvider>,
        webhooks: Option<Webhooks>,
        rates: Option<Arc<RateAggregator>>,
        tokens: TokenStore,
        config: AppConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            node,
            events,
            invoices,
            webhooks,
            rates,
            tokens,
            config,
            started: Instant::now(),
            shutdown,
            http: HttpCounters::default(),
            openapi: OnceLock::new(),
        }
    }

    /// The generated OpenAPI document (JSON), once [`router`] has run.
    pub fn openapi_json(&self) -> Option<&str> {
        self.openapi.get().map(String::as_str)
    }

    /// Channels as the API shows them (blocking: call off the async workers).
    pub fn channels(&self) -> Vec<ChannelView> {
        self.node
            .list_channels()
            .into_iter()
            .map(|c| ChannelView {
                channel_id: c.channel_id.to_string(),
                user_channel_id: c.user_channel_id.to_string(),
                counterparty: c.counterparty_node_id.to_string(),
                funding_txo: c.funding_txo.map(|o| o.to_string()),
                capacity_sat: c.capacity_sat,
                local_balance_msat: c.local_balance_msat,
                remote_balance_msat: c.remote_balance_msat,
                outbound_msat: c.outbound_capacity_msat,
                inbound_msat: c.inbound_capacity_msat,
                ready: c.is_channel_ready,
                usable: c.is_usable,
                public: c.is_announced,
                outbound: c.is_outbound,
                confirmations: c.confirmations,
            })
            .collect()
    }

    /// Balances (blocking).
    pub fn balances(&self) -> BalancesView {
        let b = self.node.onchain_balance();
        let mut v = BalancesView {
            onchain_confirmed_sat: b.confirmed_sat,
            onchain_unconfirmed_sat: b.unconfirmed_sat,
            onchain_spendable_sat: b.spendable_sat,
            ..Default::default()
        };
        for c in self.node.list_channels() {
            v.lightning_local_msat += c.local_balance_msat;
            v.lightning_remote_msat += c.remote_balance_msat;
            v.lightning_outbound_msat += c.outbound_capacity_msat;
            v.lightning_inbound_msat += c.inbound_capacity_msat;
        }
        v
    }

    /// The status summary (blocking).
    pub fn status(&self) -> StatusView {
        let chans = self.channels();
        StatusView {
            node_id: self.node.node_id().to_string(),
            network: self.node.network().to_string(),
            running: self.node.is_running(),
            addresses: self
                .node
                .listening_addresses()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            last_chain_sync_unix: self.node.last_sync_unix(),
            uptime_secs: self.started.elapsed().as_secs(),
            peers_connected: self
                .node
                .list_peers()
                .iter()
                .filter(|p| p.is_connected)
                .count(),
            channels: ChannelSummary {
                active: chans.iter().filter(|c| c.usable).count(),
                total: chans.len(),
                capacity_sat: chans.iter().map(|c| c.capacity_sat).sum(),
            },
            balances: self.balances(),
        }
    }

    /// The health report (blocking).
    pub fn health(&self) -> HealthView {
        let running = self.node.is_running();
        let backlog = self.webhooks.as_ref().and_then(|w| w.backlog().ok());
        let down: Vec<String> = self
            .rates
            .as_ref()
            .map(|r| {
                r.health()
                    .providers
                    .into_iter()
                    .filter(|p| p.breaker != crate::breaker::BreakerState::Closed)
                    .map(|p| p.name)
                    .collect()
            })
            .unwrap_or_default();
        let degraded = !running || backlog.is_some_and(|b| b.dead > 0) || !down.is_empty();
        HealthView {
            status: if degraded { "degraded" } else { "ok" }.into(),
            node_running: running,
            uptime_secs: self.started.elapsed().as_secs(),
            last_chain_sync_unix: self.node.last_sync_unix(),
            webhooks_pending: backlog.map(|b| b.pending),
            webhooks_dead: backlog.map(|b| b.dead),
            rate_providers_down: down,
        }
    }
}

/// Liquidity ratios of `channels`.
pub fn liquidity(channels: &[ChannelView]) -> LiquidityView {
    fn ratio(a: u64, b: u64) -> f64 {
        if a + b == 0 {
            0.0
        } else {
            a as f64 / (a + b) as f64
        }
    }
    let per: Vec<ChannelLiquidity> = channels
        .iter()
        .map(|c| ChannelLiquidity {
            channel_id: c.channel_id.clone(),
            counterparty: c.counterparty.clone(),
            capacity_sat: c.capacity_sat,
            outbound_msat: c.outbound_msat,
            inbound_msat: c.inbound_msat,
            outbound_ratio: ratio(c.outbound_msat, c.inbound_msat),
            inbound_ratio: ratio(c.inbound_msat, c.outbound_msat),
        })
        .collect();
    let out: u64 = per.iter().map(|c| c.outbound_msat).sum();
    let inb: u64 = per.iter().map(|c| c.inbound_msat).sum();
    LiquidityView {
        channels: per,
        total_outbound_msat: out,
        total_inbound_msat: inb,
        outbound_ratio: ratio(out, inb),
        inbound_ratio: ratio(inb, out),
    }
}

/// The newest `limit` deliveries matching the filter, newest first (blocking).
///
/// # Errors
/// [`ApiError`] when the webhook store fails.
pub fn recent_deliveries(
    w: &Webhooks,
    state: Option<DeliveryState>,
    endpoint_id: Option<i64>,
    limit: usize,
) -> ApiResult<Vec<DeliveryView>> {
    let mut all = std::collections::VecDeque::new();
    let mut after = None;
    for _ in 0..100 {
        let page = w.list_deliveries(&DeliveryQuery {
            state,
            endpoint_id,
            after_id: after,
            limit: 1000,
        })?;
        let n = page.len();
        after = page.last().map(|d| d.id);
        for d in page {
            all.push_back(d);
            if all.len() > limit {
                all.pop_front();
            }
        }
        if n < 1000 {
            break;
        }
    }
    Ok(all
        .into_iter()
        .rev()
        .map(|d| DeliveryView {
            id: d.id,
            webhook_id: d.webhook_id,
            event_seq: d.event_seq,
            event_type: d.event_type,
            endpoint_id: d.endpoint_id,
            state: d.state.as_str().into(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at_ms: d.created_at_ms,
            delivered_at_ms: d.delivered_at_ms,
        })
        .collect())
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        api.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lightkeeper merchant API",
        description = "REST API of the Lightkeeper merchant node. Bearer tokens with scopes read, invoices, admin. Errors are {code, message}."
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// The OpenAPI document (JSON).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
async fn openapi_json(State(ctx): State<Arc<ApiContext>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ctx.openapi_json().unwrap_or("{}").to_string(),
    )
        .into_response()
}

async fn track(State(ctx): State<Arc<ApiContext>>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let s = res.status();
    ctx.http.requests.fetch_add(1, Ordering::Relaxed);
    if s.is_client_error() {
        ctx.http.client_errors.fetch_add(1, Ordering::Relaxed);
    }
    if s.is_server_error() {
        ctx.http.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    if s.as_u16() == 502 || s.as_u16() == 503 {
        ctx.http.backend_errors.fetch_add(1, Ordering::Relaxed);
    }
    res
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// The router (API, metrics, dashboard) and the OpenAPI document generated from the same
/// handler list.
pub fn router(ctx: Arc<ApiContext>) -> axum::Router {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health))
        .routes(routes!(routes::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(routes::status))
        .routes(routes!(routes::balances))
        .routes(routes!(routes::config))
        .routes(routes!(routes::channels))
        .routes(routes!(routes::liquidity))
        .routes(routes!(routes::peers, routes::connect_peer))
        .routes(routes!(routes::list_invoices, routes::create_invoice))
        .routes(routes!(routes::get_invoice))
        .routes(routes!(routes::cancel_invoice))
        .routes(routes!(routes::invoice_qr_svg))
        .routes(routes!(routes::invoice_qr_png))
        .routes(routes!(routes::list_payments, routes::pay))
        .routes(routes!(routes::keysend))
        .routes(routes!(routes::get_payment))
        .routes(routes!(routes::onchain_balance))
        .routes(routes!(routes::onchain_address))
        .routes(routes!(routes::onchain_send))
        .routes(routes!(routes::list_webhooks, routes::add_webhook))
        .routes(routes!(routes::remove_webhook))
        .routes(routes!(routes::test_webhook))
        .routes(routes!(routes::list_deliveries))
        .routes(routes!(routes::events))
        .routes(routes!(routes::event_stream))
        .routes(routes!(routes::list_tokens, routes::create_token))
        .routes(routes!(routes::revoke_token))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::sections))
        .split_for_parts();
    let _ = ctx
        .openapi
        .set(doc.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let limit = ctx.config.api.max_body_bytes as usize;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), track))
        .with_state(ctx)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops accepting and lets
/// open requests finish (live streams end through [`ApiContext::shutdown`]).
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<ApiContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}
