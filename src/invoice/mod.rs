//! Merchant invoices: priced in sat/msat or in fiat, open-amount, or held until the merchant
//! settles them.
//!
//! [`InvoiceService`] is written against [`crate::backend::LightningBackend`] and the domain's
//! SQLite connection only. Every state change writes the invoice row and appends the matching
//! [`crate::events::DomainEvent`] in one transaction, then publishes the event.
//!
//! # Lifecycle
//!
//! ```text
//! open ──(hold invoice paid, HTLC held)──> accepted ──settle──> settled
//!  │  └─────────────(paid)─────────────────────────────────────> settled
//!  ├──cancel──> cancelled        (accepted ──cancel──> cancelled: the HTLC is failed back)
//!  └──expiry──> expired          (background sweep; the backend refuses later HTLCs)
//! ```
//!
//! A cancelled or expired invoice is cancelled on the backend *before* its row changes, so the
//! node refuses late payments; [`InvoiceService::settle`] refuses such invoices. If the backend
//! reports a settlement anyway (a payment that arrived in the instant before the cancel), the
//! received money is recorded: the backend's settlement is a fact the books must show.
//!
//! # Money
//!
//! Amounts are integer msat; fiat amounts and prices are [`Decimal`]. A fiat amount converts as
//! `msat = ceil(fiat / btc_price * 10^11)` with exact integer arithmetic ([`fiat_to_msat`]).

use std::fmt;
use std::time::Duration;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, Hash32};
use crate::rates::RateError;

mod service;
mod store;

pub use service::InvoiceService;

/// Msat in one bitcoin.
pub const MSAT_PER_BTC: u64 = 100_000_000_000;
/// The largest amount an invoice may ask for: 21 million BTC, in msat.
pub const MAX_AMOUNT_MSAT: u64 = 21_000_000 * MSAT_PER_BTC;
/// The longest description a BOLT11 invoice can carry, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 639;
/// The largest metadata object accepted, serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// The longest external reference accepted, in characters.
pub const MAX_REFERENCE_LEN: usize = 64;

/// Invoice settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceConfig {
    /// Expiry when the request gives none (default 24 h).
    pub default_expiry: Duration,
    /// Shortest expiry accepted (default 1 h; tests may lower it to a few seconds).
    pub min_expiry: Duration,
    /// Longest expiry accepted (default 168 h).
    pub max_expiry: Duration,
    /// How often the background sweep expires overdue invoices (default 30 s).
    pub sweep_interval: Duration,
}

impl Default for InvoiceConfig {
    fn default() -> Self {
        Self {
            default_expiry: Duration::from_secs(24 * 3600),
            min_expiry: Duration::from_secs(3600),
            max_expiry: Duration::from_secs(168 * 3600),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

impl InvoiceConfig {
    /// Checks that the bounds are whole seconds, ordered, at least 1 s, fit a BOLT11 expiry,
    /// and that the default lies within them.
    ///
    /// # Errors
    /// [`InvoiceError::InvalidConfig`] naming the offending setting.
    pub fn validate(&self) -> Result<(), InvoiceError> {
        let bad = |m: String| Err(InvoiceError::InvalidConfig(m));
        if self.min_expiry < Duration::from_secs(1) {
            return bad("min_expiry must be at least 1 second".into());
        }
        if self.max_expiry < self.min_expiry {
            return bad(format!(
                "max_expiry ({}) is shorter than min_expiry ({})",
                human(self.max_expiry),
                human(self.min_expiry)
            ));
        }
        if self.max_expiry.as_secs() > u32::MAX as u64 {
            return bad("max_expiry is longer than a BOLT11 invoice can express".into());
        }
        if self.default_expiry < self.min_expiry || self.default_expiry > self.max_expiry {
            return bad(format!(
                "default_expiry ({}) must lie between min_expiry ({}) and max_expiry ({})",
                human(self.default_expiry),
                human(self.min_expiry),
                human(self.max_expiry)
            ));
        }
        if self.sweep_interval.is_zero() {
            return bad("sweep_interval must be positive".into());
        }
        Ok(())
    }
}

/// `90s`, `2h`, `1h30m`...: a duration as a person writes it.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (h, 0, 0) if h > 0 => format!("{h}h"),
        (0, m, 0) => format!("{m}m"),
        (h, m, 0) if h > 0 => format!("{h}h{m}m"),
        _ => format!("{s}s"),
    }
}

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Waiting for payment.
    Open,
    /// A hold invoice's payment arrived and is held until [`InvoiceService::settle`] or
    /// [`InvoiceService::cancel`].
    Accepted,
    /// Paid (final).
    Settled,
    /// Cancelled by the merchant (final).
    Cancelled,
    /// Expired unpaid (final).
    Expired,
}

impl InvoiceStatus {
    /// `open`, `accepted`, `settled`, `cancelled` or `expired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Accepted => "accepted",
            InvoiceStatus::Settled => "settled",
            InvoiceStatus::Cancelled => "cancelled",
            InvoiceStatus::Expired => "expired",
        }
    }

    /// Whether no further transition is possible (by the merchant).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            InvoiceStatus::Settled | InvoiceStatus::Cancelled | InvoiceStatus::Expired
        )
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InvoiceStatus {
    type Err = InvoiceError;

    /// Parses [`InvoiceStatus::as_str`] (any case).
    fn from_str(s: &str) -> Result<Self, InvoiceError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "open" => InvoiceStatus::Open,
            "accepted" => InvoiceStatus::Accepted,
            "settled" => InvoiceStatus::Settled,
            "cancelled" => InvoiceStatus::Cancelled,
            "expired" => InvoiceStatus::Expired,
            _ => {
                return Err(InvoiceError::InvalidInput(format!(
                    "unknown invoice status {s:?}; expected open, accepted, settled, cancelled or expired"
                )))
            }
        })
    }
}

/// How much a new invoice asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceAmount {
    /// A fixed amount in sat.
    Sats(u64),
    /// A fixed amount in msat.
    Msat(u64),
    /// A fiat amount, converted at the current rate (rounded up to the msat).
    Fiat {
        /// The amount, e.g. `500.00`.
        amount: Decimal,
        /// ISO 4217 code, e.g. `EUR` (any case).
        currency: String,
    },
    /// The payer chooses.
    Open,
}

/// How a hold invoice's preimage is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldPreimage {
    /// The service draws a random preimage, stores it and returns it in
    /// [`Invoice::preimage`]; settle with [`InvoiceService::settle`].
    Generate,
    /// The caller chose this preimage; it is stored; settle with [`InvoiceService::settle`].
    Given(Hash32),
    /// The caller keeps the preimage and gives only its hash; settle with
    /// [`InvoiceService::settle_with_preimage`].
    HashOnly(Hash32),
}

/// A request for a new invoice. Build one with [`NewInvoice::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvoice {
    /// Amount.
    pub amount: InvoiceAmount,
    /// Description shown to the payer (at most [`MAX_DESCRIPTION_BYTES`] bytes).
    pub description: String,
    /// Expiry; `None` for [`InvoiceConfig::default_expiry`].
    pub expiry: Option<Duration>,
    /// The merchant's data, a JSON object (`None`: `{}`).
    pub metadata: Option<serde_json::Value>,
    /// The merchant's reference (e.g. `INV-001`); the invoice id becomes `INV-001-LN`.
    pub external_ref: Option<String>,
    /// Make it a hold invoice: the payment is held until settled or cancelled.
    pub hold: Option<HoldPreimage>,
}

impl NewInvoice {
    /// An invoice for `amount` described by `description`, with the defaults for the rest.
    pub fn new(amount: InvoiceAmount, description: impl Into<String>) -> Self {
        Self {
            amount,
            description: description.into(),
            expiry: None,
            metadata: None,
            external_ref: None,
            hold: None,
        }
    }
    /// Sets the expiry.
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = Some(expiry);
        self
    }
    /// Sets the metadata (must be a JSON object).
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
    /// Sets the external reference.
    pub fn with_external_ref(mut self, external_ref: impl Into<String>) -> Self {
        self.external_ref = Some(external_ref.into());
        self
    }
    /// Makes it a hold invoice.
    pub fn hold(mut self, preimage: HoldPreimage) -> Self {
        self.hold = Some(preimage);
        self
    }
}

/// The exchange rate an invoice was priced at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiatPrice {
    /// The fiat amount asked.
    pub amount: Decimal,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Price of one BTC in `currency` used for the conversion.
    pub btc_price: Decimal,
    /// Where the rate came from (`coingecko`, `median(...)`, `fallback`, ...).
    pub source: String,
    /// When the rate was obtained, Unix seconds.
    pub fetched_at_unix: u64,
}

/// An invoice as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    /// Id: `<external_ref>-LN`, or a generated `inv_<hex>`.
    pub id: String,
    /// The merchant's reference, when given.
    pub external_ref: Option<String>,
    /// Payment hash.
    pub payment_hash: Hash32,
    /// The BOLT11 payment request.
    pub bolt11: String,
    /// Status.
    pub status: InvoiceStatus,
    /// Requested amount, msat (`None`: open amount).
    pub amount_msat: Option<u64>,
    /// Fiat pricing, for fiat invoices.
    pub fiat: Option<FiatPrice>,
    /// Description.
    pub description: String,
    /// The merchant's metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// Whether it is a hold invoice.
    pub hold: bool,
    /// A hold invoice's preimage, when the service knows it.
    pub preimage: Option<Hash32>,
    /// Amount received (held, for an accepted hold invoice), msat.
    pub received_msat: Option<u64>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry time, Unix seconds.
    pub expires_at: u64,
    /// When a hold payment arrived, Unix seconds.
    pub accepted_at: Option<u64>,
    /// When it was paid, Unix seconds.
    pub settled_at: Option<u64>,
    /// When it was cancelled or expired, Unix seconds.
    pub closed_at: Option<u64>,
}

impl Invoice {
    /// How much more than the requested amount was received, msat (0 when not overpaid or
    /// for open amounts).
    pub fn overpaid_msat(&self) -> u64 {
        match (self.amount_msat, self.received_msat) {
            (Some(asked), Some(got)) => got.saturating_sub(asked),
            _ => 0,
        }
    }

    /// The fiat value of the amount received at the stored rate: the asked fiat amount when
    /// exactly the requested amount arrived, otherwise the received msat converted and rounded
    /// down to the fiat amount's precision (at least 2 decimals). `None` for non-fiat invoices.
    pub fn received_fiat(&self) -> Option<Decimal> {
        let fiat = self.fiat.as_ref()?;
        let got = self.received_msat?;
        if Some(got) == self.amount_msat {
            return Some(fiat.amount);
        }
        msat_to_fiat(got, fiat.btc_price, fiat.amount.scale().max(2))
    }
}

/// Filter and page of [`InvoiceService::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceQuery {
    /// Only invoices in this status.
    pub status: Option<InvoiceStatus>,
    /// Page size (1..=500; default 50).
    pub limit: usize,
    /// [`InvoicePage::next_cursor`] of the previous page; `None` for the newest invoices.
    pub cursor: Option<String>,
}

impl Default for InvoiceQuery {
    fn default() -> Self {
        Self {
            status: None,
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of invoices, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoicePage {
    /// The invoices.
    pub invoices: Vec<Invoice>,
    /// Pass this as [`InvoiceQuery::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why an invoice operation failed. Validation variants are the caller's to fix; `Backend` and
/// `Storage` may be retried; `Rate` says why no exchange rate was available.
#[derive(Debug, Clone, PartialEq)]
pub enum InvoiceError {
    /// The amount is zero, too large or not representable.
    InvalidAmount(String),
    /// The expiry lies outside the configured bounds.
    InvalidExpiry {
        /// Requested.
        requested: Duration,
        /// Configured minimum.
        min: Duration,
        /// Configured maximum.
        max: Duration,
    },
    /// The metadata is not a JSON object or is too large.
    InvalidMetadata(String),
    /// The description is too long.
    InvalidDescription(String),
    /// The currency is not a three-letter ISO 4217 code.
    InvalidCurrency(String),
    /// The external reference is empty, too long or has characters other than
    /// `A-Z a-z 0-9 . _ -`.
    InvalidReference(String),
    /// Another invoice already uses this external reference.
    DuplicateReference(String),
    /// Another malformed input (cursor, status name, page size).
    InvalidInput(String),
    /// The service's configuration is unusable.
    InvalidConfig(String),
    /// No invoice with this id (or hash, or reference).
    NotFound(String),
    /// The invoice's status does not allow the operation.
    InvalidState {
        /// Invoice id.
        id: String,
        /// Its status.
        status: InvoiceStatus,
        /// What was attempted and why it cannot be done.
        message: String,
    },
    /// The preimage does not hash to the invoice's payment hash, or the service does not know
    /// the preimage (a hash-only hold invoice settled with [`InvoiceService::settle`]).
    Preimage(String),
    /// No exchange rate for a fiat invoice.
    Rate(RateError),
    /// The Lightning backend failed.
    Backend(BackendError),
    /// The database failed.
    Storage(String),
}

impl InvoiceError {
    /// Whether retrying the same call later may succeed (backend unavailable, database busy,
    /// rates unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            InvoiceError::Backend(e) => e.is_transient(),
            InvoiceError::Storage(_) => true,
            InvoiceError::Rate(RateError::Unavailable(_) | RateError::Stale(_)) => true,
            _ => false,
        }
    }
}

impl fmt::Display for InvoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvoiceError::InvalidAmount(m) => write!(f, "invalid amount: {m}"),
            InvoiceError::InvalidExpiry {
                requested,
                min,
                max,
            } => write!(
                f,
                "invalid expiry: {} is outside the allowed range {}..={}",
                human(*requested),
                human(*min),
                human(*max)
            ),
            InvoiceError::InvalidMetadata(m) => write!(f, "invalid metadata: {m}"),
            InvoiceError::InvalidDescription(m) => write!(f, "invalid description: {m}"),
            InvoiceError::InvalidCurrency(m) => write!(f, "invalid currency: {m}"),
            InvoiceError::InvalidReference(m) => write!(f, "invalid external reference: {m}"),
            InvoiceError::DuplicateReference(r) => write!(
                f,
                "external reference {r:?} is already used by invoice {r}-LN; choose another reference"
            ),
            InvoiceError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            InvoiceError::InvalidConfig(m) => write!(f, "invalid invoice configuration: {m}"),
            InvoiceError::NotFound(m) => write!(f, "invoice not found: {m}"),
            InvoiceError::InvalidState {
                id,
                status,
                message,
            } => write!(f, "invoice {id} is {status}: {message}"),
            InvoiceError::Preimage(m) => write!(f, "preimage: {m}"),
            InvoiceError::Rate(e) => write!(f, "cannot price the invoice: {e}"),
            InvoiceError::Backend(e) => write!(f, "{e}"),
            InvoiceError::Storage(m) => write!(f, "invoice storage failed: {m}"),
        }
    }
}

impl std::error::Error for InvoiceError {}

impl From<rusqlite::Error> for InvoiceError {
    fn from(e: rusqlite::Error) -> Self {
        InvoiceError::Storage(e.to_string())
    }
}

impl From<crate::Error> for InvoiceError {
    fn from(e: crate::Error) -> Self {
        InvoiceError::Storage(e.to_string())
    }
}

impl From<BackendError> for InvoiceError {
    fn from(e: BackendError) -> Self {
        InvoiceError::Backend(e)
    }
}

impl From<RateError> for InvoiceError {
    fn from(e: RateError) -> Self {
        InvoiceError::Rate(e)
    }
}

fn pow10(e: u32) -> Option<u128> {
    10u128.checked_pow(e)
}

/// Converts a fiat amount to msat at `btc_price` (fiat per BTC):
/// `ceil(fiat * 10^11 / btc_price)`, exactly, in integer arithmetic.
///
/// # Errors
/// [`InvoiceError::InvalidAmount`] when `fiat` is not positive, the price is not positive, or
/// the result exceeds [`MAX_AMOUNT_MSAT`].
pub fn fiat_to_msat(fiat: Decimal, btc_price: Decimal) -> Result<u64, InvoiceError> {
    if fiat <= Decimal::ZERO {
        return Err(InvoiceError::InvalidAmount(format!(
            "fiat amount must be greater than 0, got {fiat}"
        )));
    }
    if btc_price <= Decimal::ZERO {
        return Err(InvoiceError::InvalidAmount(format!(
            "exchange rate must be positive, got {btc_price}"
        )));
    }
    let too_large = || {
        InvoiceError::InvalidAmount(format!(
            "{fiat} at {btc_price} per BTC exceeds the largest payable amount"
        ))
    };
    let (f, p) = (fiat.normalize(), btc_price.normalize());
    // fiat = mf / 10^sf, price = mp / 10^sp, msat = mf * 10^(11 + sp - sf) / mp.
    let (mf, mp) = (f.mantissa() as u128, p.mantissa() as u128);
    let exp = 11 + p.scale() as i64 - f.scale() as i64;
    let (num, den) = if exp >= 0 {
        let num = pow10(exp as u32)
            .and_then(|x| mf.checked_mul(x))
            .ok_or_else(too_large)?;
        (num, mp)
    } else {
        let den = pow10((-exp) as u32)
            .and_then(|x| mp.checked_mul(x))
            .ok_or_else(too_large)?;
        (mf, den)
    };
    let msat = num.div_ceil(den);
    if msat > MAX_AMOUNT_MSAT as u128 {
        return Err(too_large());
    }
    Ok(msat as u64)
}

/// The fiat value of `msat` at `btc_price`, rounded toward zero to `scale` decimals; `None` on
/// overflow.
pub fn msat_to_fiat(msat: u64, btc_price: Decimal, scale: u32) -> Option<Decimal> {
    let v = Decimal::from(msat)
        .checked_mul(btc_price)?
        .checked_div(Decimal::from(MSAT_PER_BTC))?;
    Some(v.round_dp_with_strategy(scale, RoundingStrategy::ToZero))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn fiat_conversion_rounds_up_exactly() {
        // 500 EUR at 45000 EUR/BTC = 0.0111111... BTC = 1_111_111_111.11 msat -> ...112.
        assert_eq!(
            fiat_to_msat(d("500.00"), d("45000")).unwrap(),
            1_111_111_112
        );
        // Exact: 450 at 45000 = 0.01 BTC.
        assert_eq!(
            fiat_to_msat(d("450"), d("45000.000")).unwrap(),
            1_000_000_000
        );
        assert_eq!(fiat_to_msat(d("0.01"), d("100000")).unwrap(), 10_000);
        // 1 cent at a price that does not divide: rounds up to the msat.
        assert_eq!(fiat_to_msat(d("0.01"), d("30000.03")).unwrap(), 33_334);
        assert_eq!(fiat_to_msat(d("1"), d("3")).unwrap(), 33_333_333_334);
        assert!(matches!(
            fiat_to_msat(d("0"), d("45000")),
            Err(InvoiceError::InvalidAmount(_))
        ));
        assert!(matches!(
            fiat_to_msat(d("-1"), d("45000")),
            Err(InvoiceError::InvalidAmount(_))
        ));
        assert!(matches!(
            fiat_to_msat(d("1"), d("0")),
            Err(InvoiceError::InvalidAmount(_))
        ));
        assert!(matches!(
            fiat_to_msat(
                d("79228162514264337593543950335"),
                d("0.0000000000000000000000000001")
            ),
            Err(InvoiceError::InvalidAmount(_))
        ));
        assert!(matches!(
            fiat_to_msat(d("1000000000000"), d("1")),
            Err(InvoiceError::InvalidAmount(_))
        ));
    }

    #[test]
    fn received_fiat_and_overpayment() {
        assert_eq!(
            msat_to_fiat(1_111_111_112, d("45000"), 2),
            Some(d("500.00"))
        );
        assert_eq!(
            msat_to_fiat(1_500_000_000, d("45000"), 2),
            Some(d("675.00"))
        );
        assert_eq!(msat_to_fiat(1, d("45000"), 2), Some(d("0.00")));
    }

    #[test]
    fn config_bounds() {
        InvoiceConfig::default().validate().unwrap();
        let c = InvoiceConfig {
            min_expiry: Duration::from_secs(7200),
            ..InvoiceConfig::default()
        };
        assert!(c.validate().is_ok());
        let c = InvoiceConfig {
            default_expiry: Duration::from_secs(60),
            ..InvoiceConfig::default()
        };
        assert!(matches!(c.validate(), Err(InvoiceError::InvalidConfig(_))));
        let e = InvoiceError::InvalidExpiry {
            requested: Duration::from_secs(1800),
            min: Duration::from_secs(3600),
            max: Duration::from_secs(168 * 3600),
        };
        assert_eq!(
            e.to_string(),
            "invalid expiry: 30m is outside the allowed range 1h..=168h"
        );
        assert_eq!(
            "Settled".parse::<InvoiceStatus>().unwrap(),
            InvoiceStatus::Settled
        );
        assert!("paid".parse::<InvoiceStatus>().is_err());
    }
}
