//! The [`RateProvider`] trait, its error type, and HTTP helpers shared by the providers.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;

use super::json::Json;

/// Largest response body read from a provider; real answers are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest provider message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 200;

/// One source of BTC prices (an exchange-rate API or a fixed table).
#[async_trait]
pub trait RateProvider: Send + Sync {
    /// Short lowercase name (`coingecko`, `coinmarketcap`, ...), used in [`super::Rate::source`],
    /// error messages and health reports.
    fn name(&self) -> &str;

    /// The price of one BTC in `currency` (upper-case ISO 4217 code, e.g. `EUR`).
    ///
    /// # Errors
    /// A [`ProviderError`] saying why the provider gave no usable price.
    async fn fetch(&self, currency: &str) -> Result<Decimal, ProviderError>;
}

/// Why a provider gave no price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// The request did not complete within the timeout.
    Timeout,
    /// The provider answered HTTP 429: the plan's request quota is used up.
    RateLimited {
        /// The provider's own explanation, if it gave one.
        message: String,
    },
    /// The provider answered with another non-success HTTP status.
    Http {
        /// HTTP status code.
        status: u16,
        /// The provider's explanation, or the start of the body.
        message: String,
    },
    /// The request could not be sent or the response not read (DNS, TCP, TLS, ...).
    Transport(String),
    /// The response was not the JSON shape the provider documents.
    Malformed(String),
    /// The provider reported an error in its response body (e.g. a CoinMarketCap `error_code`).
    Api(String),
    /// The provider answered but has no price for this currency.
    MissingCurrency(String),
    /// The price was zero, negative or not a decimal number.
    InvalidPrice(String),
    /// The provider is configured wrongly (bad base URL, unusable API key, ...).
    Config(String),
}

impl ProviderError {
    /// Whether this failure says something about the provider's health (and so counts against
    /// its circuit breaker). A currency the provider does not quote is not a health problem.
    pub fn is_provider_failure(&self) -> bool {
        !matches!(self, ProviderError::MissingCurrency(_))
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderError::Timeout => write!(f, "request timed out"),
            ProviderError::RateLimited { message } if message.is_empty() => write!(
                f,
                "rate limited (HTTP 429): request quota used up, lower the request rate or \
                 upgrade the API plan"
            ),
            ProviderError::RateLimited { message } => write!(
                f,
                "rate limited (HTTP 429): {message}; lower the request rate or upgrade the \
                 API plan"
            ),
            ProviderError::Http { status, message } => {
                write!(f, "HTTP {status}")?;
                if *status == 401 || *status == 403 {
                    write!(f, " (check the API key)")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            ProviderError::Transport(m) => write!(f, "connection failed: {m}"),
            ProviderError::Malformed(m) => write!(f, "unexpected response: {m}"),
            ProviderError::Api(m) => write!(f, "provider error: {m}"),
            ProviderError::MissingCurrency(c) => write!(f, "no price quoted for {c}"),
            ProviderError::InvalidPrice(m) => write!(f, "invalid price: {m}"),
            ProviderError::Config(m) => write!(f, "misconfigured: {m}"),
        }
    }
}

impl std::error::Error for ProviderError {}

/// A provider that always answers from a fixed table of prices. The aggregator uses one as the
/// last-resort fallback; it can also be used as a regular provider in tests and demos.
#[derive(Debug, Clone, Default)]
pub struct FixedRateProvider {
    rates: HashMap<String, Decimal>,
}

impl FixedRateProvider {
    /// A provider quoting `rates` (currency code, any case -> price of one BTC).
    pub fn new<I, S>(rates: I) -> Self
    where
        I: IntoIterator<Item = (S, Decimal)>,
        S: AsRef<str>,
    {
        Self {
            rates: rates
                .into_iter()
                .map(|(c, p)| (c.as_ref().trim().to_ascii_uppercase(), p))
                .collect(),
        }
    }

    /// The configured price for `currency` (any case), if any.
    pub fn get(&self, currency: &str) -> Option<Decimal> {
        self.rates
            .get(&currency.trim().to_ascii_uppercase())
            .copied()
    }

    /// The configured currency codes (upper case), in no particular order.
    pub fn currencies(&self) -> impl Iterator<Item = &str> {
        self.rates.keys().map(String::as_str)
    }

    /// Whether no rate is configured.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }
}

#[async_trait]
impl RateProvider for FixedRateProvider {
    fn name(&self) -> &str {
        "fixed"
    }

    /// # Errors
    /// [`ProviderError::MissingCurrency`] when no rate is configured for `currency`, and
    /// [`ProviderError::InvalidPrice`] when the configured rate is not positive.
    async fn fetch(&self, currency: &str) -> Result<Decimal, ProviderError> {
        let price = self
            .get(currency)
            .ok_or_else(|| ProviderError::MissingCurrency(currency.to_ascii_uppercase()))?;
        check_price(price)
    }
}

/// Accepts only a strictly positive price.
pub(crate) fn check_price(price: Decimal) -> Result<Decimal, ProviderError> {
    if price > Decimal::ZERO {
        Ok(price)
    } else {
        Err(ProviderError::InvalidPrice(format!(
            "{price} is not a positive price"
        )))
    }
}

/// Builds the HTTP client the providers share.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("lightkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Config(format!("cannot build the HTTP client: {e}")))
}

/// Checks a base URL and strips its trailing slashes.
pub(crate) fn normalize_base_url(base: &str) -> Result<String, ProviderError> {
    let base = base.trim().trim_end_matches('/');
    match reqwest::Url::parse(base) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(base.to_owned()),
        Ok(u) => Err(ProviderError::Config(format!(
            "base URL {base} has scheme {}, expected http or https",
            u.scheme()
        ))),
        Err(e) => Err(ProviderError::Config(format!(
            "invalid base URL {base}: {e}"
        ))),
    }
}

fn map_reqwest_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    // The chain of causes carries the useful part ("connection refused", "dns error", ...).
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    let mut depth = 0;
    while let Some(s) = source {
        if depth >= 4 {
            break;
        }
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
        depth += 1;
    }
    ProviderError::Transport(msg)
}

/// Sends `request`, reads at most [`MAX_BODY_BYTES`] of the body, maps HTTP failures to
/// [`ProviderError`]s (quoting `status.error_message`/`error` from a JSON error body) and parses
/// a successful body as JSON.
pub(crate) async fn get_json(request: reqwest::RequestBuilder) -> Result<Json, ProviderError> {
    let mut resp = request.send().await.map_err(map_reqwest_error)?;
    let status = resp.status();
    let mut body: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = resp.chunk().await.map_err(map_reqwest_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let message = error_message(&body);
        if status.as_u16() == 429 {
            return Err(ProviderError::RateLimited { message });
        }
        return Err(ProviderError::Http {
            status: status.as_u16(),
            message,
        });
    }
    if truncated {
        return Err(ProviderError::Malformed(format!(
            "response body larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Json::parse(&body).map_err(|e| ProviderError::Malformed(format!("invalid JSON ({e})")))
}

/// A short, printable explanation from an error body: the JSON `status.error_message`
/// (CoinMarketCap, CoinGecko), `error` or `message` field, else the start of the body.
fn error_message(body: &[u8]) -> String {
    let from_json = Json::parse(body).ok().and_then(|j| {
        let status_msg = j
            .get("status")
            .and_then(|s| s.get("error_message"))
            .and_then(Json::as_str)
            .map(str::to_owned);
        status_msg
            .or_else(|| j.get("error").and_then(Json::as_str).map(str::to_owned))
            .or_else(|| j.get("message").and_then(Json::as_str).map(str::to_owned))
    });
    let raw = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    sanitize(&raw)
}

/// Collapses whitespace, drops control characters and caps the length of a quoted message.
pub(crate) fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if cleaned.chars().count() > MAX_MESSAGE_CHARS {
        let mut t: String = cleaned.chars().take(MAX_MESSAGE_CHARS).collect();
        t.push('…');
        t
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_extracted_and_bounded() {
        assert_eq!(
            error_message(br#"{"status":{"error_code":1002,"error_message":"API key missing."}}"#),
            "API key missing."
        );
        assert_eq!(
            error_message(br#"{"error":"coin not found"}"#),
            "coin not found"
        );
        assert_eq!(
            error_message(b"<html>\n  Bad\tGateway\x07</html>"),
            "<html> Bad Gateway</html>"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes()).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(normalize_base_url("ftp://x").is_err());
        assert!(normalize_base_url("not a url").is_err());
    }

    #[tokio::test]
    async fn fixed_provider_quotes_configured_currencies_only() {
        let p = FixedRateProvider::new([("eur", Decimal::new(90_000, 0)), ("USD", Decimal::ZERO)]);
        assert_eq!(p.fetch("EUR").await.unwrap(), Decimal::new(90_000, 0));
        assert_eq!(
            p.fetch("CHF").await,
            Err(ProviderError::MissingCurrency("CHF".into()))
        );
        assert!(matches!(
            p.fetch("USD").await,
            Err(ProviderError::InvalidPrice(_))
        ));
    }
}
