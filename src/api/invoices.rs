//! The invoice seam of the API: [`InvoiceProvider`] is what the handlers, the dashboard and the
//! CLI need. [`MerchantInvoices`] implements it over the domain's
//! [`InvoiceService`](crate::invoice::InvoiceService), which prices, stores and tracks invoices
//! and appends their events (the [`crate::merchant::Merchant`] turns the node's payments into
//! invoice state changes).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use crate::backend::Hash32;
use crate::invoice::{
    Invoice, InvoiceAmount, InvoiceError, InvoiceQuery, InvoiceService, InvoiceStatus, NewInvoice,
};
use crate::rates::RateError;

/// An invoice as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceView {
    /// Invoice id (the merchant's number when given, e.g. `INV-001`).
    pub id: String,
    /// `pending`, `paid`, `cancelled` or `expired`.
    pub status: String,
    /// BOLT11 payment request.
    pub bolt11: String,
    /// Payment hash, hex.
    pub payment_hash: String,
    /// Requested amount in sat (`null`: open amount).
    pub amount_sats: Option<u64>,
    /// Requested amount in msat.
    pub amount_msat: Option<u64>,
    /// Fiat amount as a decimal string, for fiat invoices.
    pub amount_fiat: Option<String>,
    /// ISO 4217 currency of `amount_fiat`.
    pub currency: Option<String>,
    /// BTC price used for the conversion.
    pub exchange_rate: Option<String>,
    /// Where the rate came from (`coingecko`, `fallback`, ...).
    pub rate_source: Option<String>,
    /// Description shown to the payer.
    pub description: String,
    /// The merchant's metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Amount received, msat, once paid.
    pub received_msat: Option<u64>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Expiry time, RFC 3339 UTC.
    pub expires_at: String,
    /// Payment time, RFC 3339 UTC.
    pub paid_at: Option<String>,
}

/// `POST /v1/invoices`: a fiat amount (`amount` + `currency`), a sat amount (`sats`) or neither
/// (open amount).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoiceRequest {
    /// The merchant's invoice number, used as the id (`[A-Za-z0-9._-]`, at most 64).
    pub numero: Option<String>,
    /// Fiat amount as a decimal string or number, e.g. `"500.00"`.
    #[schema(value_type = Option<String>)]
    pub amount: Option<serde_json::Value>,
    /// ISO 4217 currency of `amount`, e.g. `EUR`.
    pub currency: Option<String>,
    /// Amount in sat.
    pub sats: Option<u64>,
    /// Description shown to the payer.
    pub description: Option<String>,
    /// Expiry in seconds.
    pub expiry_secs: Option<u64>,
    /// Expiry in hours (alternative to `expiry_secs`).
    pub expiry_hours: Option<u64>,
    /// Free-form JSON object stored with the invoice and sent in webhooks.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Filter of `GET /v1/invoices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InvoiceFilter {
    /// Only this status.
    pub status: Option<String>,
    /// At most this many (default 50, at most 500), newest first.
    pub limit: Option<u32>,
}

/// What the API needs from an invoice service.
#[async_trait]
pub trait InvoiceProvider: Send + Sync {
    /// Creates an invoice.
    async fn create(&self, req: CreateInvoiceRequest) -> ApiResult<InvoiceView>;
    /// Invoices matching `filter`, newest first.
    async fn list(&self, filter: InvoiceFilter) -> ApiResult<Vec<InvoiceView>>;
    /// One invoice by id (or payment hash).
    async fn get(&self, id: &str) -> ApiResult<InvoiceView>;
    /// Cancels a pending invoice.
    async fn cancel(&self, id: &str) -> ApiResult<InvoiceView>;
}

/// [`InvoiceProvider`] over the domain's [`InvoiceService`].
pub struct MerchantInvoices {
    service: Arc<InvoiceService>,
}

impl MerchantInvoices {
    /// Serves the API's invoice calls from `service`.
    pub fn new(service: Arc<InvoiceService>) -> Self {
        Self { service }
    }
}

fn secs_to_rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The API's status names: `pending`, `accepted` (hold), `paid`, `cancelled`, `expired`.
fn status_name(s: InvoiceStatus) -> &'static str {
    match s {
        InvoiceStatus::Open => "pending",
        InvoiceStatus::Accepted => "accepted",
        InvoiceStatus::Settled => "paid",
        InvoiceStatus::Cancelled => "cancelled",
        InvoiceStatus::Expired => "expired",
    }
}

fn view(i: &Invoice) -> InvoiceView {
    InvoiceView {
        id: i.id.clone(),
        status: status_name(i.status).to_string(),
        bolt11: i.bolt11.clone(),
        payment_hash: i.payment_hash.to_string(),
        // Whole sats, rounded up like the msat amount the payer is asked for.
        amount_sats: i.amount_msat.map(|m| m.div_ceil(1000)),
        amount_msat: i.amount_msat,
        amount_fiat: i.fiat.as_ref().map(|f| f.amount.to_string()),
        currency: i.fiat.as_ref().map(|f| f.currency.clone()),
        exchange_rate: i.fiat.as_ref().map(|f| f.btc_price.to_string()),
        rate_source: i.fiat.as_ref().map(|f| f.source.clone()),
        description: i.description.clone(),
        metadata: i.metadata.clone(),
        received_msat: i.received_msat,
        created_at: secs_to_rfc3339(i.created_at),
        expires_at: secs_to_rfc3339(i.expires_at),
        paid_at: i.settled_at.map(secs_to_rfc3339),
    }
}

impl From<InvoiceError> for ApiError {
    fn from(e: InvoiceError) -> Self {
        let m = e.to_string();
        match e {
            InvoiceError::NotFound(_) => ApiError::not_found(m),
            InvoiceError::DuplicateReference(_) | InvoiceError::InvalidState { .. } => {
                ApiError::conflict(m)
            }
            InvoiceError::Rate(RateError::UnsupportedCurrency(_)) => ApiError::bad_request(m),
            InvoiceError::Rate(_) => ApiError::unavailable(m),
            InvoiceError::Backend(b) => b.into(),
            InvoiceError::Storage(_) => ApiError::internal(m),
            _ => ApiError::bad_request(m),
        }
    }
}

impl MerchantInvoices {
    /// By invoice id, external reference (the `numero`) or payment hash.
    fn find(&self, key: &str) -> ApiResult<Invoice> {
        let key = key.trim();
        if let Some(i) = self.service.get(key)? {
            return Ok(i);
        }
        if let Some(i) = self.service.by_external_ref(key)? {
            return Ok(i);
        }
        if let Ok(hash) = Hash32::from_str(key) {
            if let Some(i) = self.service.by_payment_hash(&hash)? {
                return Ok(i);
            }
        }
        Err(ApiError::not_found(format!(
            "no invoice with id, number or payment hash {key}"
        )))
    }
}

#[async_trait]
impl InvoiceProvider for MerchantInvoices {
    async fn create(&self, req: CreateInvoiceRequest) -> ApiResult<InvoiceView> {
        let amount = match (&req.amount, &req.currency, req.sats) {
            (Some(_), _, Some(_)) => {
                return Err(ApiError::bad_request(
                    "give amount+currency or sats, not both",
                ))
            }
            (Some(a), Some(cur), None) => InvoiceAmount::Fiat {
                amount: parse_amount(a)?,
                currency: cur.trim().to_string(),
            },
            (Some(_), None, None) => {
                return Err(ApiError::bad_request(
                    "amount needs a currency, e.g. \"EUR\"",
                ))
            }
            (None, Some(_), _) => return Err(ApiError::bad_request("currency needs an amount")),
            (None, None, Some(0)) => return Err(ApiError::bad_request("sats must be positive")),
            (None, None, Some(s)) => InvoiceAmount::Sats(s),
            (None, None, None) => InvoiceAmount::Open,
        };
        let expiry = match (req.expiry_secs, req.expiry_hours) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give expiry_secs or expiry_hours, not both",
                ))
            }
            (Some(s), None) => Some(s),
            (None, Some(h)) => Some(h.saturating_mul(3600)),
            (None, None) => None,
        };
        let description = match (&req.description, &req.numero) {
            (Some(d), _) => d.clone(),
            (None, Some(n)) => format!("Invoice {}", n.trim()),
            (None, None) => "Lightning invoice".to_string(),
        };
        let mut new = NewInvoice::new(amount, description);
        if let Some(secs) = expiry {
            new = new.with_expiry(Duration::from_secs(secs));
        }
        if let Some(m) = req.metadata {
            new = new.with_metadata(m);
        }
        if let Some(n) = req.numero {
            new = new.with_external_ref(n.trim().to_string());
        }
        Ok(view(&self.service.create(new).await?))
    }

    async fn list(&self, filter: InvoiceFilter) -> ApiResult<Vec<InvoiceView>> {
        let status = match filter.status.as_deref() {
            None => None,
            Some("pending") => Some(InvoiceStatus::Open),
            Some("accepted") => Some(InvoiceStatus::Accepted),
            Some("paid") => Some(InvoiceStatus::Settled),
            Some("cancelled") => Some(InvoiceStatus::Cancelled),
            Some("expired") => Some(InvoiceStatus::Expired),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "status must be pending, accepted, paid, cancelled or expired",
                ))
            }
        };
        let limit = filter.limit.unwrap_or(50).clamp(1, 500) as usize;
        let page = self.service.list(&InvoiceQuery {
            status,
            limit,
            cursor: None,
        })?;
        Ok(page.invoices.iter().map(view).collect())
    }

    async fn get(&self, id: &str) -> ApiResult<InvoiceView> {
        self.find(id).map(|i| view(&i))
    }

    async fn cancel(&self, id: &str) -> ApiResult<InvoiceView> {
        let current = self.find(id)?;
        Ok(view(&self.service.cancel(&current.id).await?))
    }
}

fn parse_amount(v: &serde_json::Value) -> ApiResult<Decimal> {
    let s = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "amount must be a decimal string such as \"500.00\"",
            ))
        }
    };
    let d = Decimal::from_str(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .map_err(|_| ApiError::bad_request(format!("amount {s:?} is not a decimal number")))?;
    if d <= Decimal::ZERO {
        return Err(ApiError::bad_request("amount must be positive"));
    }
    if d.scale() > 8 {
        return Err(ApiError::bad_request(
            "amount has more than 8 decimal places",
        ));
    }
    Ok(d)
}
