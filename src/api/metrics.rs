//! `/metrics` in the Prometheus text format. Domain counters come from the durable event log,
//! so they survive restarts.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::ApiContext;
use crate::breaker::BreakerState;
use crate::webhook::DeliveryQuery;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
}

/// Renders every metric (blocking: reads the database).
pub(crate) fn render(ctx: &ApiContext) -> String {
    let mut out = String::new();
    let counts: std::collections::HashMap<String, u64> = {
        let conn = crate::events::lock(ctx.events.conn());
        conn.prepare("SELECT event_type, count(*) FROM domain_events GROUP BY event_type")
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect()
            })
            .unwrap_or_default()
    };
    let c = |t: &str| *counts.get(t).unwrap_or(&0) as f64;
    metric(
        &mut out,
        "lightkeeper_invoices_created_total",
        "counter",
        "Invoices created.",
        &one(c("invoice_created")),
    );
    metric(
        &mut out,
        "lightkeeper_invoices_settled_total",
        "counter",
        "Invoices paid and settled.",
        &one(c("payment_received")),
    );
    metric(
        &mut out,
        "lightkeeper_invoices_cancelled_total",
        "counter",
        "Invoices cancelled.",
        &one(c("invoice_cancelled")),
    );
    metric(
        &mut out,
        "lightkeeper_invoices_expired_total",
        "counter",
        "Invoices expired unpaid.",
        &one(c("invoice_expired")),
    );
    metric(
        &mut out,
        "lightkeeper_payments_received_total",
        "counter",
        "Incoming payments settled.",
        &one(c("payment_received")),
    );
    metric(
        &mut out,
        "lightkeeper_payments_sent_total",
        "counter",
        "Outgoing payments that succeeded.",
        &one(c("payment_sent")),
    );
    metric(
        &mut out,
        "lightkeeper_payments_failed_total",
        "counter",
        "Outgoing payments that failed.",
        &one(c("payment_failed")),
    );

    if let Some(w) = &ctx.webhooks {
        let (mut attempts, mut delivered, mut failed_attempts) = (0u64, 0u64, 0u64);
        let mut after = None;
        for _ in 0..100 {
            let Ok(page) = w.list_deliveries(&DeliveryQuery {
                after_id: after,
                limit: 1000,
                ..Default::default()
            }) else {
                break;
            };
            for d in &page {
                attempts += d.attempts as u64;
                if d.state == crate::webhook::DeliveryState::Delivered {
                    delivered += 1;
                    failed_attempts += (d.attempts as u64).saturating_sub(1);
                } else {
                    failed_attempts += d.attempts as u64;
                }
            }
            after = page.last().map(|d| d.id);
            if page.len() < 1000 {
                break;
            }
        }
        let b = w.backlog().unwrap_or_default();
        metric(
            &mut out,
            "lightkeeper_webhook_attempts_total",
            "counter",
            "Webhook HTTP attempts.",
            &one(attempts as f64),
        );
        metric(
            &mut out,
            "lightkeeper_webhook_successes_total",
            "counter",
            "Webhook deliveries delivered.",
            &one(delivered as f64),
        );
        metric(
            &mut out,
            "lightkeeper_webhook_failed_attempts_total",
            "counter",
            "Webhook attempts that failed.",
            &one(failed_attempts as f64),
        );
        metric(
            &mut out,
            "lightkeeper_webhook_dead_letters",
            "gauge",
            "Webhook deliveries dead-lettered.",
            &one(b.dead as f64),
        );
        metric(
            &mut out,
            "lightkeeper_webhook_pending",
            "gauge",
            "Webhook deliveries waiting.",
            &one(b.pending as f64),
        );
    }

    metric(
        &mut out,
        "lightkeeper_http_requests_total",
        "counter",
        "API requests answered.",
        &one(ctx.http.requests.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "lightkeeper_http_client_errors_total",
        "counter",
        "API 4xx answers.",
        &one(ctx.http.client_errors.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "lightkeeper_http_server_errors_total",
        "counter",
        "API 5xx answers.",
        &one(ctx.http.server_errors.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "lightkeeper_backend_errors_total",
        "counter",
        "Requests failed by the node or another backend (502/503).",
        &one(ctx.http.backend_errors.load(Ordering::Relaxed) as f64),
    );

    if let Some(r) = &ctx.rates {
        let samples: Vec<(String, f64)> = r
            .health()
            .providers
            .into_iter()
            .map(|p| {
                let v = match p.breaker {
                    BreakerState::Closed => 0.0,
                    BreakerState::HalfOpen => 1.0,
                    BreakerState::Open => 2.0,
                };
                (format!("{{breaker=\"rates_{}\"}}", p.name), v)
            })
            .collect();
        metric(
            &mut out,
            "lightkeeper_breaker_state",
            "gauge",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            &samples,
        );
    }

    let chans = ctx.channels();
    metric(
        &mut out,
        "lightkeeper_node_running",
        "gauge",
        "1 when the node runs.",
        &one(f64::from(u8::from(ctx.node.is_running()))),
    );
    metric(
        &mut out,
        "lightkeeper_channels",
        "gauge",
        "Channels.",
        &one(chans.len() as f64),
    );
    metric(
        &mut out,
        "lightkeeper_channels_usable",
        "gauge",
        "Usable channels.",
        &one(chans.iter().filter(|c| c.usable).count() as f64),
    );
    metric(
        &mut out,
        "lightkeeper_channel_outbound_msat",
        "gauge",
        "Sendable liquidity, msat.",
        &one(chans.iter().map(|c| c.outbound_msat).sum::<u64>() as f64),
    );
    metric(
        &mut out,
        "lightkeeper_channel_inbound_msat",
        "gauge",
        "Receivable liquidity, msat.",
        &one(chans.iter().map(|c| c.inbound_msat).sum::<u64>() as f64),
    );
    out
}
