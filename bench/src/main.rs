//! Lightkeeper benchmark on real regtest (`cargo run --release -p lightkeeper-bench`).
//!
//! Scenario (issue 2): one 0.1 BTC channel, 200 payments of 10,000 sat each, measuring
//! invoices created per second, sequential payments per second with p50/p99 latency, and
//! payments per second with 16 in flight. The same scenario runs against ldk-node 0.7.1 in the
//! same process and machine as the baseline; each figure is printed with the ratio to it.
//! `--only lightkeeper` skips the baseline.

mod ldk_node_runner;
mod lightkeeper_runner;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lightkeeper_harness::Regtest;

pub const PAYMENTS: usize = 200;
pub const AMOUNT_MSAT: u64 = 10_000_000;
pub const CHANNEL_SAT: u64 = 10_000_000;
pub const INVOICES: usize = 1_000;
pub const IN_FLIGHT: usize = 16;

/// What the scenario needs from a payer/merchant pair.
pub trait Pair {
    /// Merchant creates an invoice; returns its BOLT11 string.
    fn invoice(&self, amount_msat: u64, description: &str) -> String;
    /// Payer starts paying; returns the payment hash.
    fn pay(&self, invoice: &str) -> [u8; 32];
    /// Waits for the payer's success event for one of `pending`; panics on failure.
    fn next_success(&self, pending: &HashSet<[u8; 32]>) -> [u8; 32];
    /// Acknowledges the merchant's queued events.
    fn drain_merchant(&self);
    /// Stops both nodes.
    fn stop(self);
}

/// The scenario's figures.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    invoices_per_sec: f64,
    seq_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    par_per_sec: f64,
    par_cpu_ms_per_payment: f64,
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (clock ticks
/// of 10 ms), in ms; `None` where that file does not exist.
fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

fn run(pair: &impl Pair) -> Figures {
    let start = Instant::now();
    for i in 0..INVOICES {
        pair.invoice(AMOUNT_MSAT, &format!("bench invoice {i}"));
    }
    let invoices_per_sec = INVOICES as f64 / start.elapsed().as_secs_f64();

    let invoices: Vec<String> = (0..PAYMENTS)
        .map(|i| pair.invoice(AMOUNT_MSAT, &format!("seq {i}")))
        .collect();
    let mut latencies = Vec::with_capacity(PAYMENTS);
    let start = Instant::now();
    for inv in &invoices {
        let t = Instant::now();
        let hash = pair.pay(inv);
        pair.next_success(&HashSet::from([hash]));
        latencies.push(t.elapsed());
        pair.drain_merchant();
    }
    let seq_per_sec = PAYMENTS as f64 / start.elapsed().as_secs_f64();
    latencies.sort();

    let invoices: Vec<String> = (0..PAYMENTS)
        .map(|i| pair.invoice(AMOUNT_MSAT, &format!("par {i}")))
        .collect();
    let mut pending = HashSet::new();
    let mut next = invoices.iter();
    let mut done = 0;
    let cpu0 = process_cpu_ms();
    let start = Instant::now();
    while done < PAYMENTS {
        while pending.len() < IN_FLIGHT {
            let Some(inv) = next.next() else { break };
            pending.insert(pair.pay(inv));
        }
        let h = pair.next_success(&pending);
        pending.remove(&h);
        done += 1;
        pair.drain_merchant();
    }
    let par_per_sec = PAYMENTS as f64 / start.elapsed().as_secs_f64();
    let par_cpu_ms_per_payment = match (cpu0, process_cpu_ms()) {
        (Some(a), Some(b)) => (b - a) / PAYMENTS as f64,
        _ => f64::NAN,
    };
    Figures {
        invoices_per_sec,
        seq_per_sec,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        par_per_sec,
        par_cpu_ms_per_payment,
    }
}

fn main() {
    let only_ours = std::env::args().any(|a| a == "lightkeeper");
    let rt = Regtest::start();
    eprintln!("[bench] lightkeeper: setting up");
    let ours = {
        let pair = lightkeeper_runner::setup(&rt);
        let f = run(&pair);
        pair.stop();
        f
    };
    let base = if only_ours {
        None
    } else {
        eprintln!("[bench] ldk-node 0.7.1 baseline: setting up");
        let pair = ldk_node_runner::setup(&rt);
        let f = run(&pair);
        pair.stop();
        Some(f)
    };
    let line =
        |name: &str, unit: &str, ours: f64, base: Option<f64>, higher_is_better: bool| match base {
            Some(b) => {
                let ratio = if higher_is_better { ours / b } else { b / ours };
                println!(
                    "{name}: {ours:.2} {unit} (ldk-node 0.7.1: {b:.2} {unit}; {ratio:.1}x better)"
                );
            }
            None => println!("{name}: {ours:.2} {unit}"),
        };
    println!("scenario: one {CHANNEL_SAT} sat channel, {PAYMENTS} payments of {} sat, {INVOICES} invoices", AMOUNT_MSAT / 1000);
    line(
        "invoices_created_per_sec",
        "/s",
        ours.invoices_per_sec,
        base.map(|b| b.invoices_per_sec),
        true,
    );
    line(
        "sequential_payments_per_sec",
        "/s",
        ours.seq_per_sec,
        base.map(|b| b.seq_per_sec),
        true,
    );
    line(
        "sequential_latency_p50",
        "ms",
        ours.p50_ms,
        base.map(|b| b.p50_ms),
        false,
    );
    line(
        "sequential_latency_p99",
        "ms",
        ours.p99_ms,
        base.map(|b| b.p99_ms),
        false,
    );
    line(
        "parallel_16_payments_per_sec",
        "/s",
        ours.par_per_sec,
        base.map(|b| b.par_per_sec),
        true,
    );
    // Both nodes run in this process, so this is the CPU both sides spent per payment (bench
    // loop included, bitcoind excluded): with 2 cores, 1000 / (2 x this) is the CPU-bound rate.
    line(
        "parallel_16_cpu_per_payment",
        "ms",
        ours.par_cpu_ms_per_payment,
        base.map(|b| b.par_cpu_ms_per_payment),
        false,
    );
}
