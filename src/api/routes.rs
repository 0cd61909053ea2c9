//! The REST handlers. Each declares the scope it needs with [`Auth`] and its OpenAPI entry with
//! `#[utoipa::path]`; [`super::router`] registers handler and document together, so the
//! document lists exactly the served routes.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bitcoin::hex::DisplayHex;
use futures_util::Stream;

use super::auth::{Scope, TokenInfo};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::invoices::{CreateInvoiceRequest, InvoiceFilter, InvoiceView};
use super::views::*;
use super::ApiContext;
use crate::webhook::{DeliveryState, NewEndpoint};
use crate::{PaymentDirection, PaymentKind, PaymentStatus};

type Ctx = State<Arc<ApiContext>>;

/// Scope levels for [`Auth`].
pub const READ: u8 = 0;
/// See [`READ`].
pub const INVOICES: u8 = 1;
/// See [`READ`].
pub const ADMIN: u8 = 2;

/// The name of the dashboard's session cookie.
pub const COOKIE: &str = "lk_token";
/// The header a browser sends with state-changing requests authenticated by the cookie.
pub const CSRF_HEADER: &str = "x-lightkeeper-csrf";

/// An authenticated caller with at least scope `S` ([`READ`], [`INVOICES`], [`ADMIN`]).
///
/// The token comes from `Authorization: Bearer <token>`; else, for the dashboard, from the
/// `lk_token` cookie (on GET, or with the `x-lightkeeper-csrf` header, which cross-site forms
/// cannot send); else, on GET, from an `access_token` query parameter (for `EventSource`).
pub struct Auth<const S: u8>(pub TokenInfo);

fn needed(s: u8) -> Scope {
    match s {
        READ => Scope::Read,
        INVOICES => Scope::Invoices,
        _ => Scope::Admin,
    }
}

/// The token a request presents, if any.
pub fn presented_token(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or_default().trim();
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or_default();
        return Some(t.trim().to_string());
    }
    let safe = parts.method == Method::GET || parts.method == Method::HEAD;
    if safe || parts.headers.contains_key(CSRF_HEADER) {
        for c in parts.headers.get_all(header::COOKIE) {
            for kv in c.to_str().unwrap_or_default().split(';') {
                if let Some(v) = kv.trim().strip_prefix("lk_token=") {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    if safe {
        if let Some(q) = parts.uri.query() {
            for kv in q.split('&') {
                if let Some(v) = kv.strip_prefix("access_token=") {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

impl<const S: u8> FromRequestParts<Arc<ApiContext>> for Auth<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &Arc<ApiContext>,
    ) -> Result<Self, ApiError> {
        let Some(token) = presented_token(parts) else {
            return Err(ApiError::unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>'",
            ));
        };
        let Some(info) = ctx.tokens.authenticate(&token) else {
            return Err(ApiError::unauthorized("invalid or revoked token"));
        };
        let need = needed(S);
        if !info.scope.allows(need) {
            return Err(ApiError::forbidden(format!(
                "this token has scope '{}'; this request needs '{}'",
                info.scope.as_str(),
                need.as_str()
            )));
        }
        Ok(Auth(info))
    }
}

fn body<T>(r: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    r.map(|Json(v)| v).map_err(ApiError::from)
}

fn query<T: Default>(r: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    r.map(|Query(v)| v).map_err(ApiError::from)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
}

fn parse_id(s: &str, what: &str) -> ApiResult<i64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{what} id must be an integer, got {s:?}")))
}

// ---- health, status -------------------------------------------------------------------------

/// Liveness and dependency health (no token needed).
#[utoipa::path(get, path = "/health", tag = "system", security(()),
    responses((status = 200, body = HealthView), (status = 503, body = HealthView)))]
pub async fn health(State(ctx): Ctx) -> Response {
    let c = ctx.clone();
    let h = tokio::task::spawn_blocking(move || c.health())
        .await
        .unwrap_or_else(|_| HealthView {
            status: "degraded".into(),
            node_running: false,
            uptime_secs: 0,
            last_chain_sync_unix: None,
            webhooks_pending: None,
            webhooks_dead: None,
            rate_providers_down: vec![],
        });
    let code = if h.node_running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain"), (status = 401, body = ErrorBody)))]
pub async fn metrics(_a: Auth<READ>, State(ctx): Ctx) -> Response {
    let c = ctx.clone();
    let text = tokio::task::spawn_blocking(move || super::metrics::render(&c))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Node, channel and balance summary.
#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = 200, body = StatusView), (status = 401, body = ErrorBody)))]
pub async fn status(_a: Auth<READ>, State(ctx): Ctx) -> ApiResult<Json<StatusView>> {
    let c = ctx.clone();
    blocking(move || Ok(Json(c.status()))).await
}

/// On-chain and Lightning balances.
#[utoipa::path(get, path = "/v1/balances", tag = "node", responses((status = 200, body = BalancesView)))]
pub async fn balances(_a: Auth<READ>, State(ctx): Ctx) -> ApiResult<Json<BalancesView>> {
    let c = ctx.clone();
    blocking(move || Ok(Json(c.balances()))).await
}

/// The effective configuration, secrets masked.
#[utoipa::path(get, path = "/v1/config", tag = "system", responses((status = 200, body = Object)))]
pub async fn config(_a: Auth<ADMIN>, State(ctx): Ctx) -> Json<serde_json::Value> {
    Json(ctx.config.to_masked_json())
}

// ---- channels, liquidity, peers -------------------------------------------------------------

/// Channels with balances.
#[utoipa::path(get, path = "/v1/channels", tag = "node", responses((status = 200, body = Vec<ChannelView>)))]
pub async fn channels(_a: Auth<READ>, State(ctx): Ctx) -> ApiResult<Json<Vec<ChannelView>>> {
    let c = ctx.clone();
    blocking(move || Ok(Json(c.channels()))).await
}

/// Inbound/outbound ratio per channel and in total.
#[utoipa::path(get, path = "/v1/liquidity", tag = "node", responses((status = 200, body = LiquidityView)))]
pub async fn liquidity(_a: Auth<READ>, State(ctx): Ctx) -> ApiResult<Json<LiquidityView>> {
    let c = ctx.clone();
    blocking(move || Ok(Json(super::liquidity(&c.channels())))).await
}

/// Known peers.
#[utoipa::path(get, path = "/v1/peers", tag = "node", responses((status = 200, body = Vec<PeerView>)))]
pub async fn peers(_a: Auth<READ>, State(ctx): Ctx) -> ApiResult<Json<Vec<PeerView>>> {
    let c = ctx.clone();
    blocking(move || {
        Ok(Json(
            c.node
                .list_peers()
                .into_iter()
                .map(|p| PeerView {
                    node_id: p.node_id.to_string(),
                    address: p.address.map(|a| a.to_string()),
                    connected: p.is_connected,
                    persisted: p.is_persisted,
                })
                .collect(),
        ))
    })
    .await
}

/// Connects to a peer.
#[utoipa::path(post, path = "/v1/peers", tag = "node", request_body = ConnectPeerRequest,
    responses((status = 200, body = Ok), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn connect_peer(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    req: Result<Json<ConnectPeerRequest>, JsonRejection>,
) -> ApiResult<Json<Ok>> {
    let req = body(req)?;
    let c = ctx.clone();
    blocking(move || {
        c.node
            .connect_peer(&req.node_id, &req.address, req.persist.unwrap_or(true))
            .map_err(ApiError::from)?;
        Ok(Json(Ok { ok: true }))
    })
    .await
}

// ---- invoices -------------------------------------------------------------------------------

/// Creates an invoice in fiat (`amount` + `currency`), sat (`sats`) or open amount.
#[utoipa::path(post, path = "/v1/invoices", tag = "invoices", request_body = CreateInvoiceRequest,
    responses((status = 201, body = InvoiceView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_invoice(
    _a: Auth<INVOICES>,
    State(ctx): Ctx,
    req: Result<Json<CreateInvoiceRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<InvoiceView>)> {
    let req = body(req)?;
    let v = ctx.invoices.create(req).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Invoices, newest first.
#[utoipa::path(get, path = "/v1/invoices", tag = "invoices", params(InvoiceFilter),
    responses((status = 200, body = Vec<InvoiceView>), (status = 400, body = ErrorBody)))]
pub async fn list_invoices(
    _a: Auth<READ>,
    State(ctx): Ctx,
    q: Result<Query<InvoiceFilter>, QueryRejection>,
) -> ApiResult<Json<Vec<InvoiceView>>> {
    Ok(Json(ctx.invoices.list(query(q)?).await?))
}

/// One invoice by id or payment hash.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "invoices", params(("id" = String, Path, description = "Invoice id or payment hash")),
    responses((status = 200, body = InvoiceView), (status = 404, body = ErrorBody)))]
pub async fn get_invoice(
    _a: Auth<READ>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<InvoiceView>> {
    Ok(Json(ctx.invoices.get(&id).await?))
}

/// Cancels a pending invoice; later payments to it are refused.
#[utoipa::path(post, path = "/v1/invoices/{id}/cancel", tag = "invoices", params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, body = InvoiceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_invoice(
    _a: Auth<INVOICES>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<InvoiceView>> {
    Ok(Json(ctx.invoices.cancel(&id).await?))
}

/// The invoice's BOLT11 as a QR code (SVG).
#[utoipa::path(get, path = "/v1/invoices/{id}/qr.svg", tag = "invoices", params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "SVG image", content_type = "image/svg+xml"), (status = 404, body = ErrorBody)))]
pub async fn invoice_qr_svg(
    _a: Auth<READ>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let inv = ctx.invoices.get(&id).await?;
    let svg = super::qr::svg(&format!("lightning:{}", inv.bolt11).to_uppercase())
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// The invoice's BOLT11 as a QR code (PNG).
#[utoipa::path(get, path = "/v1/invoices/{id}/qr.png", tag = "invoices", params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "PNG image", content_type = "image/png"), (status = 404, body = ErrorBody)))]
pub async fn invoice_qr_png(
    _a: Auth<READ>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let inv = ctx.invoices.get(&id).await?;
    let png = super::qr::png(&format!("lightning:{}", inv.bolt11).to_uppercase(), 4)
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

// ---- payments -------------------------------------------------------------------------------

fn payment_view(p: crate::PaymentDetails) -> PaymentView {
    PaymentView {
        payment_hash: p.payment_hash.0.as_hex().to_string(),
        direction: match p.direction {
            PaymentDirection::Inbound => "inbound",
            PaymentDirection::Outbound => "outbound",
        }
        .into(),
        kind: match p.kind {
            PaymentKind::Bolt11 => "bolt11",
            PaymentKind::Bolt11Hold => "bolt11_hold",
            PaymentKind::Keysend => "keysend",
        }
        .into(),
        status: match p.status {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        }
        .into(),
        amount_msat: p.amount_msat,
        fee_msat: p.fee_msat,
        preimage: p.preimage.map(|x| x.0.as_hex().to_string()),
        invoice: p.invoice,
        failure_reason: p.failure_reason,
        created_at_ms: p.created_at_ms,
        updated_at_ms: p.updated_at_ms,
    }
}

/// Payments, newest first.
#[utoipa::path(get, path = "/v1/payments", tag = "payments", params(PaymentsQuery),
    responses((status = 200, body = Vec<PaymentView>), (status = 400, body = ErrorBody)))]
pub async fn list_payments(
    _a: Auth<READ>,
    State(ctx): Ctx,
    q: Result<Query<PaymentsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<PaymentView>>> {
    let q = query(q)?;
    let dir = match q.direction.as_deref() {
        None => None,
        Some("inbound") => Some(PaymentDirection::Inbound),
        Some("outbound") => Some(PaymentDirection::Outbound),
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "direction must be inbound or outbound, got {o:?}"
            )))
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000) as usize;
    let c = ctx.clone();
    blocking(move || {
        Ok(Json(
            c.node
                .list_payments()?
                .into_iter()
                .filter(|p| dir.is_none_or(|d| p.direction == d))
                .take(limit)
                .map(payment_view)
                .collect(),
        ))
    })
    .await
}

/// One payment by hash.
#[utoipa::path(get, path = "/v1/payments/{hash}", tag = "payments", params(("hash" = String, Path, description = "Payment hash, hex")),
    responses((status = 200, body = PaymentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_payment(
    _a: Auth<READ>,
    State(ctx): Ctx,
    Path(hash): Path<String>,
) -> ApiResult<Json<PaymentView>> {
    let h = crate::backend::Hash32::from_str(&hash)
        .map_err(|_| ApiError::bad_request("payment hash must be 64 hex characters"))?;
    let c = ctx.clone();
    blocking(move || {
        c.node
            .payment(&crate::PaymentHash(h.0))?
            .map(|p| Json(payment_view(p)))
            .ok_or_else(|| ApiError::not_found(format!("no payment with hash {hash}")))
    })
    .await
}

/// Pays a BOLT11 invoice; the outcome arrives as an event.
#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = PayRequest,
    responses((status = 202, body = PaymentStarted), (status = 400, body = ErrorBody)))]
pub async fn pay(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    req: Result<Json<PayRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PaymentStarted>)> {
    let req = body(req)?;
    let c = ctx.clone();
    blocking(move || {
        let h = c
            .node
            .pay_invoice(&req.invoice, req.amount_msat, req.max_fee_msat)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(PaymentStarted {
                payment_hash: h.0.as_hex().to_string(),
            }),
        ))
    })
    .await
}

/// Sends a spontaneous payment (keysend).
#[utoipa::path(post, path = "/v1/payments/keysend", tag = "payments", request_body = KeysendRequest,
    responses((status = 202, body = PaymentStarted), (status = 400, body = ErrorBody)))]
pub async fn keysend(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    req: Result<Json<KeysendRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PaymentStarted>)> {
    let req = body(req)?;
    let c = ctx.clone();
    blocking(move || {
        let h = c.node.keysend(&req.node_id, req.amount_msat)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(PaymentStarted {
                payment_hash: h.0.as_hex().to_string(),
            }),
        ))
    })
    .await
}

// ---- on-chain -------------------------------------------------------------------------------

/// On-chain wallet balance.
#[utoipa::path(get, path = "/v1/onchain/balance", tag = "onchain", responses((status = 200, body = OnchainBalanceView)))]
pub async fn onchain_balance(
    _a: Auth<READ>,
    State(ctx): Ctx,
) -> ApiResult<Json<OnchainBalanceView>> {
    let c = ctx.clone();
    blocking(move || {
        let b = c.node.onchain_balance();
        Ok(Json(OnchainBalanceView {
            confirmed_sat: b.confirmed_sat,
            unconfirmed_sat: b.unconfirmed_sat,
            spendable_sat: b.spendable_sat,
            anchor_reserve_sat: b.anchor_reserve_sat,
        }))
    })
    .await
}

/// A fresh on-chain address.
#[utoipa::path(post, path = "/v1/onchain/address", tag = "onchain", responses((status = 200, body = AddressView)))]
pub async fn onchain_address(_a: Auth<ADMIN>, State(ctx): Ctx) -> ApiResult<Json<AddressView>> {
    let c = ctx.clone();
    blocking(move || {
        Ok(Json(AddressView {
            address: c.node.new_onchain_address()?.to_string(),
        }))
    })
    .await
}

/// Sends on-chain and broadcasts.
#[utoipa::path(post, path = "/v1/onchain/send", tag = "onchain", request_body = SendOnchainRequest,
    responses((status = 200, body = TxView), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn onchain_send(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    req: Result<Json<SendOnchainRequest>, JsonRejection>,
) -> ApiResult<Json<TxView>> {
    let req = body(req)?;
    let all = req.all.unwrap_or(false);
    let amount = match (req.amount_sat, all) {
        (Some(_), true) => return Err(ApiError::bad_request("give amount_sat or all, not both")),
        (None, false) => {
            return Err(ApiError::bad_request(
                "amount_sat is required (or all: true)",
            ))
        }
        (a, _) => a,
    };
    let fee = match req.fee_rate_sat_per_vb {
        Some(0) => {
            return Err(ApiError::bad_request(
                "fee_rate_sat_per_vb must be positive",
            ))
        }
        Some(r) if r > 10_000 => {
            return Err(ApiError::bad_request("fee_rate_sat_per_vb is above 10000"))
        }
        Some(r) => crate::FeeRate::from_sat_per_vb(r),
        None => None,
    };
    let c = ctx.clone();
    blocking(move || {
        Ok(Json(TxView {
            txid: c.node.send_onchain(&req.address, amount, fee)?.to_string(),
        }))
    })
    .await
}

// ---- webhooks -------------------------------------------------------------------------------

fn webhooks(ctx: &ApiContext) -> ApiResult<crate::webhook::Webhooks> {
    ctx.webhooks
        .clone()
        .ok_or_else(|| ApiError::unavailable("webhooks are not enabled on this server"))
}

fn webhook_view(e: crate::webhook::Endpoint, with_secret: bool) -> WebhookView {
    WebhookView {
        id: e.id,
        url: e.url,
        event_types: e.event_types,
        enabled: e.enabled,
        created_at_ms: e.created_at_ms,
        secret: with_secret.then_some(e.secret),
    }
}

/// Webhook endpoints (secrets not shown).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, body = Vec<WebhookView>)))]
pub async fn list_webhooks(_a: Auth<READ>, State(ctx): Ctx) -> ApiResult<Json<Vec<WebhookView>>> {
    let w = webhooks(&ctx)?;
    blocking(move || {
        Ok(Json(
            w.list_endpoints()?
                .into_iter()
                .map(|e| webhook_view(e, false))
                .collect(),
        ))
    })
    .await
}

/// Adds a webhook endpoint; the answer carries its secret once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = AddWebhookRequest,
    responses((status = 201, body = WebhookView), (status = 400, body = ErrorBody)))]
pub async fn add_webhook(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    req: Result<Json<AddWebhookRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let req = body(req)?;
    let w = webhooks(&ctx)?;
    blocking(move || {
        let e = w.add_endpoint(NewEndpoint {
            url: req.url,
            event_types: req.event_types.unwrap_or_default(),
            secret: req.secret,
        })?;
        Ok((StatusCode::CREATED, Json(webhook_view(e, true))))
    })
    .await
}

/// Removes a webhook endpoint and its deliveries.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path, description = "Endpoint id")),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
pub async fn remove_webhook(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<Ok>> {
    let id = parse_id(&id, "webhook")?;
    let w = webhooks(&ctx)?;
    blocking(move || {
        w.remove_endpoint(id)?;
        Ok(Json(Ok { ok: true }))
    })
    .await
}

/// Sends a signed `webhook.test` message now and reports the answer.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = i64, Path, description = "Endpoint id")),
    responses((status = 200, body = WebhookTestView), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn test_webhook(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookTestView>> {
    let id = parse_id(&id, "webhook")?;
    let w = webhooks(&ctx)?;
    let t = w.send_test(id).await?;
    Ok(Json(WebhookTestView {
        webhook_id: t.webhook_id,
        status: t.status,
        elapsed_ms: t.elapsed.as_millis() as u64,
    }))
}

/// Webhook deliveries, newest first.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", params(DeliveriesQuery),
    responses((status = 200, body = Vec<DeliveryView>), (status = 400, body = ErrorBody)))]
pub async fn list_deliveries(
    _a: Auth<READ>,
    State(ctx): Ctx,
    q: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<DeliveryView>>> {
    let q = query(q)?;
    let state = match q.state.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("dead") => Some(DeliveryState::Dead),
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "state must be pending, delivered or dead, got {o:?}"
            )))
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000) as usize;
    let w = webhooks(&ctx)?;
    blocking(move || {
        Ok(Json(super::recent_deliveries(
            &w,
            state,
            q.endpoint_id,
            limit,
        )?))
    })
    .await
}

// ---- events ---------------------------------------------------------------------------------

fn event_view(e: crate::events::StoredEvent) -> EventView {
    EventView {
        seq: e.seq,
        event_type: e.event_type,
        payload: e.payload,
        created_at_ms: e.created_at_ms,
    }
}

/// Domain events after a cursor (replay).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = 400, body = ErrorBody)))]
pub async fn events(
    _a: Auth<READ>,
    State(ctx): Ctx,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<EventsPage>> {
    let q = query(q)?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let c = ctx.clone();
    blocking(move || {
        let evs = c.events.read_after(after, limit)?;
        let next_after = evs.last().map(|e| e.seq).unwrap_or(after);
        Ok(Json(EventsPage {
            events: evs.into_iter().map(event_view).collect(),
            next_after,
        }))
    })
    .await
}

/// Live domain events as server-sent events (`id:` is the sequence number, `data:` an
/// [`EventView`]). Resumes after
/// `Last-Event-ID` or `after`, else starts with new events.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(EventsQuery),
    responses((status = 200, description = "text/event-stream of EventView", content_type = "text/event-stream")))]
pub async fn event_stream(
    _a: Auth<READ>,
    State(ctx): Ctx,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let q = query(q)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let live = ctx.events.subscribe();
    let cursor = match last_id.or(q.after) {
        Some(c) => c,
        None => {
            let c = ctx.clone();
            blocking(move || Ok(c.events.last_seq()?)).await?
        }
    };
    struct St {
        ctx: Arc<ApiContext>,
        live: tokio::sync::broadcast::Receiver<crate::events::StoredEvent>,
        cursor: u64,
        backlog: std::collections::VecDeque<crate::events::StoredEvent>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        catch_up: bool,
    }
    let st = St {
        shutdown: ctx.shutdown.clone(),
        ctx: ctx.clone(),
        live,
        cursor,
        backlog: Default::default(),
        catch_up: true,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if *st.shutdown.borrow() {
                return None;
            }
            if let Some(e) = st.backlog.pop_front() {
                if e.seq <= st.cursor {
                    continue;
                }
                st.cursor = e.seq;
                let data = serde_json::to_string(&event_view(e.clone())).unwrap_or_default();
                let ev = SseEvent::default().id(e.seq.to_string()).data(data);
                return Some((Ok(ev), st));
            }
            if st.catch_up {
                st.catch_up = false;
                let (c, after) = (st.ctx.clone(), st.cursor);
                let evs = tokio::task::spawn_blocking(move || c.events.read_after(after, 1000))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or_default();
                if evs.len() == 1000 {
                    st.catch_up = true;
                }
                st.backlog.extend(evs);
                continue;
            }
            tokio::select! {
                _ = st.shutdown.changed() => return None,
                r = st.live.recv() => match r {
                    Ok(e) => st.backlog.push_back(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => st.catch_up = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

// ---- tokens ---------------------------------------------------------------------------------

/// API tokens (hashes are never shown).
#[utoipa::path(get, path = "/v1/tokens", tag = "system", responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_tokens(_a: Auth<ADMIN>, State(ctx): Ctx) -> Json<Vec<TokenInfo>> {
    Json(ctx.tokens.list())
}

/// Creates a token; the answer shows it once.
#[utoipa::path(post, path = "/v1/tokens", tag = "system", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody)))]
pub async fn create_token(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    req: Result<Json<CreateTokenRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let req = body(req)?;
    let c = ctx.clone();
    blocking(move || {
        let (info, token) = c.tokens.create(&req.name, req.scope)?;
        Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
    })
    .await
}

/// Revokes a token.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "system", params(("id" = i64, Path, description = "Token id")),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    _a: Auth<ADMIN>,
    State(ctx): Ctx,
    Path(id): Path<String>,
) -> ApiResult<Json<Ok>> {
    let id = parse_id(&id, "token")?;
    let c = ctx.clone();
    blocking(move || {
        if c.tokens.revoke(id)? {
            Ok(Json(Ok { ok: true }))
        } else {
            Err(ApiError::not_found(format!("no token with id {id}")))
        }
    })
    .await
}
