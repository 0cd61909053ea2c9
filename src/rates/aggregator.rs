//! [`RateAggregator`]: asks every enabled provider at once, takes the median, caches it, and
//! falls back to fixed rates when every provider is down.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rust_decimal::Decimal;

use super::coingecko::{CoinGeckoProvider, COINGECKO_DEFAULT_BASE_URL};
use super::coinmarketcap::{CoinMarketCapProvider, COINMARKETCAP_DEFAULT_BASE_URL};
use super::provider::{http_client, FixedRateProvider, ProviderError, RateProvider};
use super::{Rate, RateError, RateSource};
use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};

/// A source of time, so cache expiry, staleness and breaker timeouts can be tested without
/// sleeping.
pub trait Clock: Send + Sync {
    /// Monotonic time, used for ages and breaker timeouts.
    fn now(&self) -> Instant;
    /// Wall-clock time in Unix seconds, stamped on [`Rate::fetched_at_unix`].
    fn unix_now(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_unix: u64,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the current time.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_unix: SystemClock.unix_now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut o = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *o = o.saturating_add(by);
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let off = self.offset();
        self.start.checked_add(off).unwrap_or(self.start)
    }

    fn unix_now(&self) -> u64 {
        self.start_unix.saturating_add(self.offset().as_secs())
    }
}

/// Settings of one HTTP rate provider.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// Whether the provider is asked at all.
    pub enabled: bool,
    /// API key (CoinGecko: optional demo key; CoinMarketCap: required).
    pub api_key: Option<String>,
    /// Scheme, host and port of the API, without a path (e.g. `https://api.coingecko.com`).
    pub base_url: String,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself.
        f.debug_struct("ProviderSettings")
            .field("enabled", &self.enabled)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// Exchange-rate settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatesConfig {
    /// CoinGecko (default: enabled, no key, [`COINGECKO_DEFAULT_BASE_URL`]).
    pub coingecko: ProviderSettings,
    /// CoinMarketCap (default: disabled since it needs a key,
    /// [`COINMARKETCAP_DEFAULT_BASE_URL`]).
    pub coinmarketcap: ProviderSettings,
    /// Limit for each provider request (default 5 s).
    pub request_timeout: Duration,
    /// How long a rate is served from the cache before the providers are asked again
    /// (default 300 s).
    pub cache_ttl: Duration,
    /// The oldest cached rate that may still be served when every provider fails
    /// (default 900 s; must be at least `cache_ttl`).
    pub max_staleness: Duration,
    /// Fixed prices of one BTC per currency (code -> price), used only when every provider
    /// fails and no cached rate within `max_staleness` exists. Empty by default.
    pub fallback_rates: BTreeMap<String, Decimal>,
    /// Circuit breaker applied to each provider.
    pub breaker: BreakerConfig,
}

impl Default for RatesConfig {
    fn default() -> Self {
        Self {
            coingecko: ProviderSettings {
                enabled: true,
                api_key: None,
                base_url: COINGECKO_DEFAULT_BASE_URL.into(),
            },
            coinmarketcap: ProviderSettings {
                enabled: false,
                api_key: None,
                base_url: COINMARKETCAP_DEFAULT_BASE_URL.into(),
            },
            request_timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(300),
            max_staleness: Duration::from_secs(900),
            fallback_rates: BTreeMap::new(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// A [`RatesConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatesConfigError(pub String);

impl std::fmt::Display for RatesConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid exchange-rate configuration: {}", self.0)
    }
}

impl std::error::Error for RatesConfigError {}

/// State of one provider, for a health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderHealth {
    /// Provider name.
    pub name: String,
    /// Its circuit breaker.
    pub breaker: BreakerState,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// When it last gave a price, Unix seconds.
    pub last_success_unix: Option<u64>,
}

/// State of one cached rate, for a health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRateHealth {
    /// The cached rate.
    pub rate: Rate,
    /// How long ago it was fetched.
    pub age: Duration,
    /// Whether it is younger than the cache TTL (served without asking the providers).
    pub fresh: bool,
    /// Whether it may still be served if every provider fails.
    pub within_staleness_bound: bool,
}

/// Health of the exchange-rate subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatesHealth {
    /// Every provider, in configuration order.
    pub providers: Vec<ProviderHealth>,
    /// Every cached rate, by currency.
    pub cached: Vec<CachedRateHealth>,
    /// Currencies with a configured fallback rate.
    pub fallback_currencies: Vec<String>,
}

impl RatesHealth {
    /// Whether at least one provider's breaker lets calls through (closed or half-open).
    pub fn any_provider_available(&self) -> bool {
        self.providers
            .iter()
            .any(|p| p.breaker != BreakerState::Open)
    }

    /// The age of the cached rate for `currency` (any case), if one is cached.
    pub fn cached_age(&self, currency: &str) -> Option<Duration> {
        self.cached
            .iter()
            .find(|c| c.rate.currency.eq_ignore_ascii_case(currency))
            .map(|c| c.age)
    }
}

struct Guarded {
    provider: Arc<dyn RateProvider>,
    breaker: CircuitBreaker,
    last_error: Mutex<Option<String>>,
    last_success_unix: Mutex<Option<u64>>,
}

struct Cached {
    rate: Rate,
    at: Instant,
}

/// If a call is dropped half-way (its caller was cancelled) while it was a breaker's half-open
/// trial, count it as failed so the breaker does not stay half-open for ever.
struct TrialGuard<'a> {
    breaker: &'a CircuitBreaker,
    clock: &'a dyn Clock,
    done: bool,
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        let now = self.clock.now();
        if !self.done && self.breaker.state_at(now) == BreakerState::HalfOpen {
            self.breaker.record_failure_at(now);
        }
    }
}

/// Why the last refresh of a currency failed: one line per provider, and whether every
/// provider simply did not quote the currency.
type RefreshFailure = (Vec<String>, bool);

/// Serializes refreshes of one currency. Callers that waited while another caller refreshed
/// reuse its outcome instead of asking the providers again one after the other.
#[derive(Default)]
struct RefreshSlot {
    /// Refreshes completed so far.
    attempts: std::sync::atomic::AtomicU64,
    /// Held while refreshing; holds the last refresh's failure (`None` after a success).
    last_failure: tokio::sync::Mutex<Option<RefreshFailure>>,
}

enum Outcome {
    Price(Decimal),
    Failed(ProviderError),
    Skipped,
}

/// The [`RateSource`] used in production: asks the enabled providers concurrently (each behind
/// a circuit breaker and a timeout), answers the median of their prices, caches it per currency
/// for the TTL, serves a cached rate up to the staleness bound when every provider fails, and
/// then the configured fallback rate.
pub struct RateAggregator {
    providers: Vec<Guarded>,
    fallback: FixedRateProvider,
    cache: Mutex<HashMap<String, Cached>>,
    refresh_slots: Mutex<HashMap<String, Arc<RefreshSlot>>>,
    request_timeout: Duration,
    cache_ttl: Duration,
    max_staleness: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RateAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateAggregator")
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|g| g.provider.name())
                    .collect::<Vec<_>>(),
            )
            .field("request_timeout", &self.request_timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("max_staleness", &self.max_staleness)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Upper-cases and checks an ISO 4217-style code (three ASCII letters).
fn normalize_currency(currency: &str) -> Option<String> {
    let c = currency.trim();
    (c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic())).then(|| c.to_ascii_uppercase())
}

/// The median of non-empty `prices` (mean of the two middle values for an even count).
fn median(prices: &mut [Decimal]) -> Option<Decimal> {
    prices.sort_unstable();
    let n = prices.len();
    if n == 0 {
        return None;
    }
    let hi = *prices.get(n / 2)?;
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = *prices.get(n / 2 - 1)?;
    // lo <= hi, so this cannot overflow.
    Some(lo + (hi - lo) / Decimal::TWO)
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// A boxed provider call.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Waits for all `futs`, polling them concurrently on the current task; results keep order.
async fn join_all<T>(futs: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut slots: Vec<(Option<BoxFuture<'_, T>>, Option<T>)> =
        futs.into_iter().map(|f| (Some(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in slots.iter_mut() {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *fut = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, out)| out).collect()
}

impl RateAggregator {
    /// Builds the providers enabled in `config` (sharing one HTTP client) and the aggregator.
    ///
    /// # Errors
    /// [`RatesConfigError`] for a bad base URL, CoinMarketCap enabled without an API key, a zero
    /// timeout, a staleness bound shorter than the TTL, or a bad fallback rate.
    pub fn from_config(config: &RatesConfig) -> Result<Self, RatesConfigError> {
        let mut providers: Vec<Arc<dyn RateProvider>> = Vec::new();
        if config.coingecko.enabled || config.coinmarketcap.enabled {
            validate_timings(config)?;
            let client =
                http_client(config.request_timeout).map_err(|e| RatesConfigError(e.to_string()))?;
            if config.coingecko.enabled {
                let p = CoinGeckoProvider::with_client(
                    client.clone(),
                    &config.coingecko.base_url,
                    config.coingecko.api_key.clone(),
                )
                .map_err(|e| RatesConfigError(format!("coingecko: {e}")))?;
                providers.push(Arc::new(p));
            }
            if config.coinmarketcap.enabled {
                let key = config.coinmarketcap.api_key.as_deref().unwrap_or_default();
                let p =
                    CoinMarketCapProvider::with_client(client, &config.coinmarketcap.base_url, key)
                        .map_err(|e| RatesConfigError(format!("coinmarketcap: {e}")))?;
                providers.push(Arc::new(p));
            }
        }
        Self::with_providers(providers, config)
    }

    /// An aggregator over `providers` (any [`RateProvider`]s), taking the timeout, TTL,
    /// staleness bound, fallback rates and breaker settings from `config` and ignoring its
    /// per-provider sections.
    ///
    /// # Errors
    /// [`RatesConfigError`] for duplicate provider names, a zero timeout, a staleness bound
    /// shorter than the TTL, or a bad fallback rate.
    pub fn with_providers(
        providers: Vec<Arc<dyn RateProvider>>,
        config: &RatesConfig,
    ) -> Result<Self, RatesConfigError> {
        validate_timings(config)?;
        let mut fallback = Vec::new();
        for (code, price) in &config.fallback_rates {
            let c = normalize_currency(code).ok_or_else(|| {
                RatesConfigError(format!(
                    "fallback currency {code:?} is not a three-letter code"
                ))
            })?;
            if *price <= Decimal::ZERO {
                return Err(RatesConfigError(format!(
                    "fallback rate for {c} must be positive, got {price}"
                )));
            }
            fallback.push((c, *price));
        }
        let mut names: Vec<&str> = Vec::new();
        for p in &providers {
            if names.contains(&p.name()) {
                return Err(RatesConfigError(format!(
                    "two providers are named {}",
                    p.name()
                )));
            }
            names.push(p.name());
        }
        let providers = providers
            .into_iter()
            .map(|p| Guarded {
                breaker: CircuitBreaker::new(p.name(), config.breaker),
                provider: p,
                last_error: Mutex::new(None),
                last_success_unix: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            providers,
            fallback: FixedRateProvider::new(fallback),
            cache: Mutex::new(HashMap::new()),
            refresh_slots: Mutex::new(HashMap::new()),
            request_timeout: config.request_timeout,
            cache_ttl: config.cache_ttl,
            max_staleness: config.max_staleness,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock (for tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The providers' breaker states and the cached rates' ages.
    pub fn health(&self) -> RatesHealth {
        let now = self.clock.now();
        let providers = self
            .providers
            .iter()
            .map(|g| ProviderHealth {
                name: g.provider.name().to_owned(),
                breaker: g.breaker.state_at(now),
                last_error: lock(&g.last_error).clone(),
                last_success_unix: *lock(&g.last_success_unix),
            })
            .collect();
        let mut cached: Vec<CachedRateHealth> = lock(&self.cache)
            .values()
            .map(|c| {
                let age = now.saturating_duration_since(c.at);
                CachedRateHealth {
                    rate: c.rate.clone(),
                    age,
                    fresh: age < self.cache_ttl,
                    within_staleness_bound: age <= self.max_staleness,
                }
            })
            .collect();
        cached.sort_by(|a, b| a.rate.currency.cmp(&b.rate.currency));
        let mut fallback_currencies: Vec<String> =
            self.fallback.currencies().map(str::to_owned).collect();
        fallback_currencies.sort();
        RatesHealth {
            providers,
            cached,
            fallback_currencies,
        }
    }

    /// The cached rate for `currency` and its age, if any (whether or not it is fresh).
    fn cached(&self, currency: &str) -> Option<(Rate, Duration)> {
        let now = self.clock.now();
        lock(&self.cache)
            .get(currency)
            .map(|c| (c.rate.clone(), now.saturating_duration_since(c.at)))
    }

    fn fresh(&self, currency: &str) -> Option<Rate> {
        self.cached(currency)
            .filter(|(_, age)| *age < self.cache_ttl)
            .map(|(r, _)| r)
    }

    async fn call(&self, g: &Guarded, currency: &str) -> Outcome {
        if !g.breaker.allow_at(self.clock.now()) {
            return Outcome::Skipped;
        }
        let mut guard = TrialGuard {
            breaker: &g.breaker,
            clock: self.clock.as_ref(),
            done: false,
        };
        let result =
            match tokio::time::timeout(self.request_timeout, g.provider.fetch(currency)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Timeout),
            };
        guard.done = true;
        match result {
            Ok(price) if price > Decimal::ZERO => {
                g.breaker.record_success();
                *lock(&g.last_error) = None;
                *lock(&g.last_success_unix) = Some(self.clock.unix_now());
                Outcome::Price(price)
            }
            Ok(price) => self.failed(
                g,
                ProviderError::InvalidPrice(format!("{price} is not a positive price")),
            ),
            Err(e) => self.failed(g, e),
        }
    }

    fn failed(&self, g: &Guarded, e: ProviderError) -> Outcome {
        let msg = self.describe(&e);
        if e.is_provider_failure() {
            g.breaker.record_failure_at(self.clock.now());
            log::warn!("exchange rate provider {}: {msg}", g.provider.name());
            *lock(&g.last_error) = Some(msg);
        } else {
            // The provider answered properly; it just does not quote this currency.
            g.breaker.record_success();
            log::debug!("exchange rate provider {}: {msg}", g.provider.name());
        }
        Outcome::Failed(e)
    }

    fn describe(&self, e: &ProviderError) -> String {
        match e {
            ProviderError::Timeout => format!(
                "request timed out after {}",
                fmt_duration(self.request_timeout)
            ),
            e => e.to_string(),
        }
    }

    /// Asks every provider; `Ok` with the median, or `Err` with one line per provider.
    async fn refresh(&self, currency: &str) -> Result<Rate, RefreshFailure> {
        let futs: Vec<BoxFuture<'_, Outcome>> = self
            .providers
            .iter()
            .map(|g| Box::pin(self.call(g, currency)) as BoxFuture<'_, Outcome>)
            .collect();
        let outcomes = join_all(futs).await;
        let mut prices = Vec::new();
        let mut names = Vec::new();
        let mut problems = Vec::new();
        let mut only_missing_currency = true;
        for (g, o) in self.providers.iter().zip(outcomes) {
            let name = g.provider.name();
            match o {
                Outcome::Price(p) => {
                    prices.push(p);
                    names.push(name);
                }
                Outcome::Failed(e) => {
                    only_missing_currency &= !e.is_provider_failure();
                    problems.push(format!("{name}: {}", self.describe(&e)));
                }
                Outcome::Skipped => {
                    only_missing_currency = false;
                    problems.push(format!(
                        "{name}: skipped, circuit breaker open after repeated failures"
                    ));
                }
            }
        }
        let Some(price) = median(&mut prices) else {
            return Err((
                problems,
                only_missing_currency && !self.providers.is_empty(),
            ));
        };
        if !problems.is_empty() {
            log::info!(
                "{currency} rate from {} only ({})",
                names.join(","),
                problems.join("; ")
            );
        }
        let source = match names.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("median({})", many.join(",")),
        };
        let rate = Rate {
            currency: currency.to_owned(),
            btc_price: price,
            fetched_at_unix: self.clock.unix_now(),
            source,
        };
        lock(&self.cache).insert(
            currency.to_owned(),
            Cached {
                rate: rate.clone(),
                at: self.clock.now(),
            },
        );
        Ok(rate)
    }
}

fn validate_timings(config: &RatesConfig) -> Result<(), RatesConfigError> {
    if config.request_timeout.is_zero() {
        return Err(RatesConfigError("request_timeout must be positive".into()));
    }
    if config.max_staleness < config.cache_ttl {
        return Err(RatesConfigError(format!(
            "max_staleness ({}) must be at least cache_ttl ({})",
            fmt_duration(config.max_staleness),
            fmt_duration(config.cache_ttl)
        )));
    }
    Ok(())
}

#[async_trait]
impl RateSource for RateAggregator {
    /// The cached rate if younger than the TTL; otherwise the median of the providers' answers.
    /// When every provider fails: the cached rate if within the staleness bound, else the
    /// fallback rate (source `fallback`) if configured.
    ///
    /// # Errors
    /// [`RateError::UnsupportedCurrency`] for a code that is not three letters or that no
    /// provider quotes; [`RateError::Stale`] when every provider fails, the only cached rate is
    /// older than the staleness bound and no fallback is configured;
    /// [`RateError::Unavailable`] when every provider fails and there is neither a cached rate
    /// nor a fallback. The messages name each provider and why it failed.
    async fn btc_rate(&self, currency: &str) -> Result<Rate, RateError> {
        let Some(currency) = normalize_currency(currency) else {
            return Err(RateError::UnsupportedCurrency(format!(
                "{:?} (expected a three-letter ISO 4217 code such as EUR)",
                currency.chars().take(16).collect::<String>()
            )));
        };
        if let Some(rate) = self.fresh(&currency) {
            return Ok(rate);
        }
        // One refresh per currency at a time; callers queued behind it reuse its result.
        let slot = lock(&self.refresh_slots)
            .entry(currency.clone())
            .or_default()
            .clone();
        let attempts_seen = slot.attempts.load(Ordering::SeqCst);
        let mut last_failure = slot.last_failure.lock().await;
        if let Some(rate) = self.fresh(&currency) {
            return Ok(rate);
        }
        let reused = match &*last_failure {
            Some(failure) if slot.attempts.load(Ordering::SeqCst) != attempts_seen => {
                Some(failure.clone())
            }
            _ => None,
        };
        let (problems, unsupported) = match reused {
            Some(failure) => failure,
            None => {
                let result = self.refresh(&currency).await;
                slot.attempts.fetch_add(1, Ordering::SeqCst);
                *last_failure = result.as_ref().err().cloned();
                match result {
                    Ok(rate) => return Ok(rate),
                    Err(failure) => failure,
                }
            }
        };
        drop(last_failure);
        let problems = if self.providers.is_empty() {
            "no exchange-rate provider is enabled".to_owned()
        } else {
            problems.join("; ")
        };
        let cached = self.cached(&currency);
        if let Some((rate, age)) = &cached {
            if *age <= self.max_staleness {
                log::warn!(
                    "serving the {currency} rate from {} s ago: {problems}",
                    age.as_secs()
                );
                return Ok(rate.clone());
            }
        }
        if let Some(price) = self.fallback.get(&currency) {
            log::warn!("using the fixed fallback {currency} rate {price}: {problems}");
            return Ok(Rate {
                currency,
                btc_price: price,
                fetched_at_unix: self.clock.unix_now(),
                source: "fallback".into(),
            });
        }
        if let Some((rate, age)) = cached {
            return Err(RateError::Stale(format!(
                "the last {currency} rate (from {}) is {} s old, more than the {} s allowed, and \
                 no provider answered ({problems}); check the providers or configure a \
                 fallback rate for {currency}",
                rate.source,
                age.as_secs(),
                self.max_staleness.as_secs()
            )));
        }
        if unsupported {
            return Err(RateError::UnsupportedCurrency(format!(
                "{currency} ({problems})"
            )));
        }
        Err(RateError::Unavailable(format!(
            "{problems}; check network access, API keys and plan limits, or configure a \
             fallback rate for {currency}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [d("5")]), Some(d("5")));
        assert_eq!(median(&mut [d("3"), d("1"), d("2")]), Some(d("2")));
        assert_eq!(median(&mut [d("100"), d("101")]), Some(d("100.5")));
        assert_eq!(
            median(&mut [d("4"), d("1"), d("3"), d("2")]),
            Some(d("2.5"))
        );
        let big = Decimal::MAX;
        assert_eq!(median(&mut [big, big]), Some(big), "no overflow");
    }

    #[test]
    fn currency_codes_are_checked() {
        assert_eq!(normalize_currency(" eur "), Some("EUR".into()));
        assert_eq!(normalize_currency("EURO"), None);
        assert_eq!(normalize_currency("E1R"), None);
        assert_eq!(normalize_currency("€UR"), None);
        assert_eq!(normalize_currency(""), None);
    }

    #[test]
    fn config_is_validated() {
        let ok = RatesConfig::default();
        assert!(RateAggregator::from_config(&ok).is_ok());
        let mut c = ok.clone();
        c.coinmarketcap.enabled = true;
        let e = RateAggregator::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("API key"), "{e}");
        let mut c = ok.clone();
        c.max_staleness = Duration::from_secs(10);
        assert!(RateAggregator::from_config(&c).is_err());
        let mut c = ok.clone();
        c.fallback_rates.insert("EUR".into(), Decimal::ZERO);
        assert!(RateAggregator::from_config(&c).is_err());
        let mut c = ok.clone();
        c.fallback_rates.insert("EURO".into(), Decimal::ONE);
        assert!(RateAggregator::from_config(&c).is_err());
        let mut c = ok;
        c.coingecko.base_url = "nope".into();
        assert!(RateAggregator::from_config(&c).is_err());
    }

    #[test]
    fn api_keys_are_not_printed() {
        let mut c = RatesConfig::default();
        c.coinmarketcap.api_key = Some("secret-key".into());
        assert!(!format!("{c:?}").contains("secret-key"));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let (t0, u0) = (c.now(), c.unix_now());
        c.advance(Duration::from_secs(61));
        assert_eq!(c.now() - t0, Duration::from_secs(61));
        assert_eq!(c.unix_now() - u0, 61);
    }
}
