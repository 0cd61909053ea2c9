# Lightkeeper tasks. `just --list` shows them.

# Regtest demo: bitcoind, a merchant and a customer node, a channel, a paid invoice.
demo:
    cargo run --example merchant

# Every test (unit + regtest integration); builds bitcoind on first use.
test:
    cargo test

# Throughput/latency benchmark on regtest (release build).
bench:
    cargo run --release -p lightkeeper-bench

# Formatting and lints.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
