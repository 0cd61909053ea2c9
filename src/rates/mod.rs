//! Fiat exchange rates for pricing invoices: providers, an aggregator with a cache, a circuit
//! breaker per provider, and a fixed fallback.
//!
//! [`RateAggregator`] is the [`RateSource`] to use: build it from a [`RatesConfig`] with
//! [`RateAggregator::from_config`]. It asks [`CoinGeckoProvider`] and/or
//! [`CoinMarketCapProvider`] (or any other [`RateProvider`]) concurrently and answers the
//! median price. Prices are parsed from the JSON text straight to [`Decimal`], never through
//! floating point.

use async_trait::async_trait;
use rust_decimal::Decimal;

mod aggregator;
mod coingecko;
mod coinmarketcap;
mod json;
mod provider;

pub use aggregator::{
    CachedRateHealth, Clock, ManualClock, ProviderHealth, ProviderSettings, RateAggregator,
    RatesConfig, RatesConfigError, RatesHealth, SystemClock,
};
pub use coingecko::{CoinGeckoProvider, COINGECKO_DEFAULT_BASE_URL};
pub use coinmarketcap::{CoinMarketCapProvider, COINMARKETCAP_DEFAULT_BASE_URL};
pub use provider::{FixedRateProvider, ProviderError, RateProvider};

/// A BTC price in a fiat currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// ISO 4217 code, upper case (`EUR`, `USD`, ...).
    pub currency: String,
    /// Price of one bitcoin in `currency`.
    pub btc_price: Decimal,
    /// When the rate was obtained, Unix seconds.
    pub fetched_at_unix: u64,
    /// Where it came from (`coingecko`, `coinmarketcap`, `median(...)`, `fallback`).
    pub source: String,
}

/// Why no rate could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateError {
    /// The currency is not supported by any enabled provider.
    UnsupportedCurrency(String),
    /// Every provider failed (or is open-circuited) and no fallback is configured; the message
    /// lists each provider's failure.
    Unavailable(String),
    /// The newest rate is older than the staleness bound.
    Stale(String),
}

impl std::fmt::Display for RateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateError::UnsupportedCurrency(c) => write!(f, "currency {c} is not supported"),
            RateError::Unavailable(m) => write!(f, "no exchange rate available: {m}"),
            RateError::Stale(m) => write!(f, "exchange rate is stale: {m}"),
        }
    }
}

impl std::error::Error for RateError {}

/// Something that can price bitcoin in fiat. The invoice service depends on this trait only.
#[async_trait]
pub trait RateSource: Send + Sync {
    /// The current price of one BTC in `currency`.
    async fn btc_rate(&self, currency: &str) -> Result<Rate, RateError>;
}
