//! Endpoint validation: URLs (HTTPS except loopback) and event-type filters.

use std::net::IpAddr;

use super::WebhookError;

/// The event types an endpoint can subscribe to (the [`crate::events::DomainEvent`] names).
/// An empty filter means "all of them".
pub const EVENT_TYPES: &[&str] = &[
    "invoice_created",
    "invoice_accepted",
    "payment_received",
    "invoice_cancelled",
    "invoice_expired",
    "payment_sent",
    "payment_failed",
    "channel_opened",
    "channel_closed",
];

/// The `event` of the synthetic message sent by [`super::Webhooks::send_test`].
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// True for hosts that never leave the machine: 127.0.0.0/8, ::1 and `localhost`. `host` is a
/// URL host as printed by [`reqwest::Url::host_str`] (IPv6 in brackets).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => bare.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// Parses and checks an endpoint URL: `https://` anywhere, `http://` only for loopback hosts.
pub(crate) fn validate_url(raw: &str) -> Result<reqwest::Url, WebhookError> {
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw)
        .map_err(|e| WebhookError::InvalidUrl(format!("{raw:?} is not a valid URL: {e}")))?;
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(WebhookError::InvalidUrl(format!("{raw:?} has no host")));
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(host) => Ok(url),
        "http" => Err(WebhookError::InsecureUrl(format!(
            "{raw:?} uses plain http; webhook URLs must use https:// (http:// is only allowed for loopback hosts: 127.0.0.0/8, ::1, localhost)"
        ))),
        other => Err(WebhookError::InvalidUrl(format!(
            "{raw:?} has scheme {other:?}; webhook URLs must use https://"
        ))),
    }
}

/// Normalizes an event filter: trimmed, deduplicated, each a known event type.
pub(crate) fn validate_event_types(types: &[String]) -> Result<Vec<String>, WebhookError> {
    let mut out: Vec<String> = Vec::new();
    for t in types {
        let t = t.trim();
        if !EVENT_TYPES.contains(&t) {
            return Err(WebhookError::UnknownEventType(format!(
                "{t:?} is not an event type; known types: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_required_except_loopback() {
        for ok in [
            "https://example.com/hook",
            "https://10.0.0.1:8443/x",
            "http://127.0.0.1:8080/x",
            "http://127.9.9.9/x",
            "http://localhost:3000/hook",
            "http://LOCALHOST./hook",
            "http://[::1]:8080/",
        ] {
            validate_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for insecure in [
            "http://example.com/hook",
            "http://128.0.0.1/x",
            "http://10.0.0.1/x",
            "http://localhost.evil.com/x",
            "http://[::2]/",
        ] {
            assert!(
                matches!(validate_url(insecure), Err(WebhookError::InsecureUrl(_))),
                "{insecure}"
            );
        }
        for invalid in [
            "",
            "example.com",
            "ftp://example.com/",
            "https://",
            "unix:/tmp/x",
        ] {
            assert!(
                matches!(validate_url(invalid), Err(WebhookError::InvalidUrl(_))),
                "{invalid}"
            );
        }
    }

    #[test]
    fn event_filter_is_validated() {
        assert_eq!(
            validate_event_types(&[" payment_received".into(), "payment_received".into()]).unwrap(),
            vec!["payment_received".to_string()]
        );
        assert!(matches!(
            validate_event_types(&["payment_recieved".into()]),
            Err(WebhookError::UnknownEventType(_))
        ));
    }
}
