//! Signing and verification (the Standard Webhooks scheme, plus seed 002's legacy header).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bitcoin::hashes::hmac::{Hmac, HmacEngine};
use bitcoin::hashes::{sha256, Hash, HashEngine};

use super::WebhookError;

/// The prefix of every webhook secret (`whsec_<base64 key>`).
pub const SECRET_PREFIX: &str = "whsec_";

/// The timestamp tolerance receivers should use unless they have a reason not to: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Header carrying the stable message id (`evt_{seq}_{endpoint_id}`).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the Unix time (seconds) the message was signed at.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying one or more space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Seed 002's legacy header: lowercase hex HMAC-SHA256 of the body keyed with the full secret
/// string (including `whsec_`).
pub const HEADER_LEGACY_SIGNATURE: &str = "x-lightning-signature";

const MIN_KEY_LEN: usize = 24;
const MAX_KEY_LEN: usize = 64;

/// Why a webhook failed verification. Every variant means "reject the request" (answer 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A required header is missing (its name).
    MissingHeader(&'static str),
    /// The secret is not `whsec_` followed by base64 of a 24–64 byte key.
    InvalidSecret,
    /// `webhook-id` is empty.
    MalformedId,
    /// `webhook-timestamp` is not a Unix time in seconds.
    MalformedTimestamp,
    /// `webhook-timestamp` is further than the tolerance from now (a replay, or a wrong clock).
    TimestampOutOfTolerance {
        /// The message's timestamp, Unix seconds.
        timestamp: i64,
        /// The receiver's time, Unix seconds.
        now: i64,
    },
    /// `webhook-signature` holds no well-formed `v1,<base64 of 32 bytes>` entry.
    MalformedSignature,
    /// No listed signature matches (tampered body, headers, or the wrong secret).
    SignatureMismatch,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::MissingHeader(h) => write!(f, "missing header {h}"),
            VerifyError::InvalidSecret => write!(
                f,
                "invalid webhook secret: expected {SECRET_PREFIX}<base64 of a {MIN_KEY_LEN}-{MAX_KEY_LEN} byte key>"
            ),
            VerifyError::MalformedId => write!(f, "{HEADER_ID} is empty"),
            VerifyError::MalformedTimestamp => {
                write!(f, "{HEADER_TIMESTAMP} is not a Unix time in seconds")
            }
            VerifyError::TimestampOutOfTolerance { timestamp, now } => write!(
                f,
                "{HEADER_TIMESTAMP} {timestamp} is {}s away from now ({now}): replayed or clock skew",
                (now - timestamp).abs()
            ),
            VerifyError::MalformedSignature => write!(
                f,
                "{HEADER_SIGNATURE} has no well-formed v1,<base64> signature"
            ),
            VerifyError::SignatureMismatch => write!(f, "no webhook signature matches"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The three Standard Webhooks headers of a received request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`.
    pub signature: &'a str,
}

impl<'a> WebhookHeaders<'a> {
    /// Picks the headers out of `(name, value)` pairs; names are matched case-insensitively.
    ///
    /// # Errors
    /// [`VerifyError::MissingHeader`] naming the first missing header.
    pub fn from_pairs<I>(pairs: I) -> Result<Self, VerifyError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let (mut id, mut timestamp, mut signature) = (None, None, None);
        for (name, value) in pairs {
            if name.eq_ignore_ascii_case(HEADER_ID) {
                id = Some(value);
            } else if name.eq_ignore_ascii_case(HEADER_TIMESTAMP) {
                timestamp = Some(value);
            } else if name.eq_ignore_ascii_case(HEADER_SIGNATURE) {
                signature = Some(value);
            }
        }
        Ok(Self {
            id: id.ok_or(VerifyError::MissingHeader(HEADER_ID))?,
            timestamp: timestamp.ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?,
            signature: signature.ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?,
        })
    }
}

/// Generates a new random secret, `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    use rand::RngCore as _;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// Decodes a `whsec_<base64>` secret into its HMAC key.
///
/// # Errors
/// [`VerifyError::InvalidSecret`] when the prefix is missing, the base64 is invalid or the key
/// is not 24–64 bytes long.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let encoded = secret
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(VerifyError::InvalidSecret)?;
    let key = B64
        .decode(encoded)
        .map_err(|_| VerifyError::InvalidSecret)?;
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
        return Err(VerifyError::InvalidSecret);
    }
    Ok(key)
}

/// Checks that `secret` is usable, for endpoint creation and rotation.
pub(crate) fn validate_secret(secret: &str) -> Result<(), WebhookError> {
    secret_key(secret).map(|_| ()).map_err(|_| {
        WebhookError::InvalidSecret(format!(
            "expected {SECRET_PREFIX}<base64 of a {MIN_KEY_LEN}-{MAX_KEY_LEN} byte key>; omit the secret to have one generated"
        ))
    })
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut engine = HmacEngine::<sha256::Hash>::new(key);
    for p in parts {
        engine.input(p);
    }
    Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
}

fn signature_bytes(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    hmac(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// Signs a message the Standard Webhooks way: `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
///
/// # Errors
/// [`VerifyError::InvalidSecret`] when the secret is malformed.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, VerifyError> {
    let key = secret_key(secret)?;
    Ok(format!(
        "v1,{}",
        B64.encode(signature_bytes(&key, id, &timestamp.to_string(), body))
    ))
}

/// The `webhook-signature` header value for all `secrets` (space-separated, in order).
///
/// # Errors
/// [`VerifyError::InvalidSecret`] when any secret is malformed.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let sigs = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sigs.join(" "))
}

/// Seed 002's `X-Lightning-Signature` value: lowercase hex of HMAC-SHA256 over the body, keyed
/// with the secret string exactly as configured (including `whsec_`).
pub fn legacy_signature(secret: &str, body: &[u8]) -> String {
    let mac = hmac(secret.as_bytes(), &[body]);
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimizer from short-circuiting the fold.
    std::hint::black_box(diff) == 0
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Verifies a received webhook: the timestamp must be within `tolerance` of `now` (replay
/// protection) and at least one `v1` signature in the header must match
/// HMAC-SHA256(secret, "{id}.{timestamp}.{body}"). Comparison is constant-time. `body` must be
/// the raw request body, byte for byte.
///
/// ```
/// use lightkeeper::webhook::{sign, verify, generate_secret, WebhookHeaders, DEFAULT_TOLERANCE};
/// let secret = generate_secret();
/// let body = br#"{"event":"payment_received"}"#;
/// let now = std::time::SystemTime::now();
/// let ts = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
/// let sig = sign(&secret, "evt_1_1", ts, body).unwrap();
/// let ts = ts.to_string();
/// let headers = WebhookHeaders { id: "evt_1_1", timestamp: &ts, signature: &sig };
/// verify(&secret, &headers, body, DEFAULT_TOLERANCE, now).unwrap();
/// ```
///
/// # Errors
/// A [`VerifyError`] saying why the request must be rejected: invalid secret, malformed id,
/// timestamp or signature header, timestamp outside the tolerance, or no matching signature.
pub fn verify(
    secret: &str,
    headers: &WebhookHeaders<'_>,
    body: &[u8],
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let key = secret_key(secret)?;
    if headers.id.trim().is_empty() {
        return Err(VerifyError::MalformedId);
    }
    let ts_str = headers.timestamp.trim();
    if ts_str.is_empty() || !ts_str.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedTimestamp);
    }
    let timestamp: i64 = ts_str
        .parse()
        .map_err(|_| VerifyError::MalformedTimestamp)?;
    let now = unix_secs(now);
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(timestamp) > tolerance as u64 {
        return Err(VerifyError::TimestampOutOfTolerance { timestamp, now });
    }
    let expected = signature_bytes(&key, headers.id, ts_str, body);
    let mut well_formed = false;
    let mut matched = false;
    for entry in headers.signature.split_ascii_whitespace() {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        if version != "v1" {
            continue;
        }
        let Ok(sig) = B64.decode(sig) else { continue };
        if sig.len() != 32 {
            continue;
        }
        well_formed = true;
        // No early exit: every entry is compared.
        matched |= ct_eq(&sig, &expected);
    }
    if !well_formed {
        return Err(VerifyError::MalformedSignature);
    }
    if matched {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

/// Verifies seed 002's legacy `X-Lightning-Signature` (hex HMAC-SHA256 of the body keyed with
/// the secret string). It has no timestamp, so it offers no replay protection: prefer
/// [`verify`].
///
/// # Errors
/// [`VerifyError::MalformedSignature`] when the value is not 64 hex digits,
/// [`VerifyError::SignatureMismatch`] when it does not match.
pub fn verify_legacy(secret: &str, body: &[u8], signature_hex: &str) -> Result<(), VerifyError> {
    let sig = signature_hex.trim();
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VerifyError::MalformedSignature);
    }
    let expected = legacy_signature(secret, body);
    if ct_eq(sig.to_ascii_lowercase().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // The Standard Webhooks reference test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(ts: &'a str, sig: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            id: ID,
            timestamp: ts,
            signature: sig,
        }
    }

    #[test]
    fn matches_standard_webhooks_vector() {
        assert_eq!(sign(SECRET, ID, TS, BODY).unwrap(), SIG);
        let ts = TS.to_string();
        verify(
            SECRET,
            &headers(&ts, SIG),
            BODY,
            DEFAULT_TOLERANCE,
            at(TS as u64),
        )
        .unwrap();
    }

    #[test]
    fn rejects_replay_tampering_and_garbage() {
        let ts = TS.to_string();
        let now = at(TS as u64);
        let tol = DEFAULT_TOLERANCE;
        assert!(matches!(
            verify(SECRET, &headers(&ts, SIG), BODY, tol, at(TS as u64 + 301)),
            Err(VerifyError::TimestampOutOfTolerance { .. })
        ));
        assert!(matches!(
            verify(SECRET, &headers(&ts, SIG), BODY, tol, at(TS as u64 - 301)),
            Err(VerifyError::TimestampOutOfTolerance { .. })
        ));
        assert_eq!(
            verify(
                SECRET,
                &headers(&ts, SIG),
                br#"{"test": 2432232315}"#,
                tol,
                now
            ),
            Err(VerifyError::SignatureMismatch)
        );
        let other = generate_secret();
        assert_eq!(
            verify(&other, &headers(&ts, SIG), BODY, tol, now),
            Err(VerifyError::SignatureMismatch)
        );
        for bad in [
            "",
            "v1",
            "v1,",
            "v1,!!!",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,AAAA",
        ] {
            assert_eq!(
                verify(SECRET, &headers(&ts, bad), BODY, tol, now),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
        for bad in ["", "-1", "12a", "1.5", "99999999999999999999999"] {
            assert_eq!(
                verify(SECRET, &headers(bad, SIG), BODY, tol, now),
                Err(VerifyError::MalformedTimestamp),
                "{bad}"
            );
        }
        assert_eq!(
            verify("nope", &headers(&ts, SIG), BODY, tol, now),
            Err(VerifyError::InvalidSecret)
        );
        let empty_id = WebhookHeaders {
            id: " ",
            timestamp: &ts,
            signature: SIG,
        };
        assert_eq!(
            verify(SECRET, &empty_id, BODY, tol, now),
            Err(VerifyError::MalformedId)
        );
    }

    #[test]
    fn accepts_any_listed_signature() {
        let new = generate_secret();
        let header = signature_header(&[&new, SECRET], ID, TS, BODY).unwrap();
        assert_eq!(header.split(' ').count(), 2);
        let ts = TS.to_string();
        for s in [&new, SECRET] {
            verify(
                s,
                &headers(&ts, &header),
                BODY,
                DEFAULT_TOLERANCE,
                at(TS as u64),
            )
            .unwrap();
        }
        // Unknown versions and junk entries are skipped, not fatal.
        let mixed = format!("v2,xyz garbage {SIG}");
        verify(
            SECRET,
            &headers(&ts, &mixed),
            BODY,
            DEFAULT_TOLERANCE,
            at(TS as u64),
        )
        .unwrap();
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let h = WebhookHeaders::from_pairs([
            ("Webhook-Id", "a"),
            ("WEBHOOK-TIMESTAMP", "1"),
            ("webhook-signature", "v1,x"),
            ("other", "y"),
        ])
        .unwrap();
        assert_eq!((h.id, h.timestamp, h.signature), ("a", "1", "v1,x"));
        assert_eq!(
            WebhookHeaders::from_pairs([("webhook-id", "a")]),
            Err(VerifyError::MissingHeader(HEADER_TIMESTAMP))
        );
    }

    #[test]
    fn secrets_and_legacy_signature() {
        let s = generate_secret();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert!(secret_key("whsec_").is_err());
        assert!(secret_key("whsec_AAAA").is_err());
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        let sig = legacy_signature(&s, BODY);
        assert_eq!(sig.len(), 64);
        verify_legacy(&s, BODY, &sig).unwrap();
        verify_legacy(&s, BODY, &sig.to_uppercase()).unwrap();
        assert_eq!(
            verify_legacy(&s, b"x", &sig),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            verify_legacy(&s, BODY, "zz"),
            Err(VerifyError::MalformedSignature)
        );
    }
}
