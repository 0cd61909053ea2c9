#!/usr/bin/env bash
# Builds `bitcoind` and `bitcoin-cli` from the Bitcoin Core source tree that crates.io's
# `libbitcoinkernel-sys` vendors, and installs them under a cache directory.
#
# Usage: build-bitcoind.sh CACHE_DIR
#   Prints the path of the installed bitcoind on its last stdout line.
#   Idempotent and safe to run concurrently (a file lock serialises builders; later ones
#   find the finished binary and return at once).
#
# Needs cmake, ninja, boost headers and libevent. When they are missing and this runs as root
# with apt-get available, it installs them; otherwise it fails with the command to run.
set -euo pipefail

KERNEL_SYS_VERSION=0.4.1
CACHE_DIR=${1:?usage: build-bitcoind.sh CACHE_DIR}
PREFIX="$CACHE_DIR/bitcoind-kernel-sys-$KERNEL_SYS_VERSION"
BITCOIND="$PREFIX/bin/bitcoind"

log() { echo "[build-bitcoind] $*" >&2; }

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.build.lock"
log "waiting for the build lock $CACHE_DIR/.build.lock"
flock 9

if [[ -x "$BITCOIND" && -x "$PREFIX/bin/bitcoin-cli" ]]; then
  log "cached: $BITCOIND"
  echo "$BITCOIND"
  exit 0
fi

# --- build tools -----------------------------------------------------------------------------
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
[[ -e /usr/include/boost/version.hpp ]] || missing+=(libboost-dev)
[[ -e /usr/include/event2/event.h ]] || missing+=(libevent-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v g++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing build dependencies: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    apt-get update -q >&2
    log "apt-get install -y --no-install-recommends ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  else
    log "missing build dependencies: ${missing[*]}"
    log "run: sudo apt-get install -y cmake ninja-build libboost-dev libevent-dev pkg-config g++"
    exit 1
  fi
fi

# --- source -------------------------------------------------------------------------------------
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
find_src() { ls -d "$CARGO_HOME"/registry/src/*/"libbitcoinkernel-sys-$KERNEL_SYS_VERSION"/bitcoin 2>/dev/null | head -n1; }
SRC=$(find_src || true)
if [[ -z "$SRC" ]]; then
  log "fetching libbitcoinkernel-sys $KERNEL_SYS_VERSION through cargo"
  FETCH="$CACHE_DIR/fetch-kernel-sys"
  mkdir -p "$FETCH/src"
  cat >"$FETCH/Cargo.toml" <<TOML
[package]
name = "fetch-kernel-sys"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
libbitcoinkernel-sys = "=$KERNEL_SYS_VERSION"
[workspace]
TOML
  : >"$FETCH/src/lib.rs"
  cargo fetch --manifest-path "$FETCH/Cargo.toml" >&2
  SRC=$(find_src || true)
  [[ -n "$SRC" ]] || { log "libbitcoinkernel-sys source not found under $CARGO_HOME/registry/src"; exit 1; }
fi
log "source: $SRC"

# --- build --------------------------------------------------------------------------------------
BUILD="$CACHE_DIR/build-kernel-sys-$KERNEL_SYS_VERSION"
log "configuring in $BUILD"
cmake -S "$SRC" -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_DAEMON=ON -DBUILD_CLI=ON \
  -DBUILD_BITCOIN_BIN=OFF -DBUILD_TESTS=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_BENCH=OFF \
  -DBUILD_GUI=OFF -DBUILD_KERNEL_LIB=OFF -DBUILD_UTIL_CHAINSTATE=OFF -DBUILD_WALLET_TOOL=OFF \
  -DENABLE_WALLET=OFF -DENABLE_IPC=OFF -DWITH_ZMQ=OFF -DENABLE_EXTERNAL_SIGNER=OFF \
  -DWITH_EMBEDDED_ASMAP=OFF -DWITH_CCACHE=OFF -DINSTALL_MAN=OFF >&2
log "building bitcoind and bitcoin-cli (about 8 minutes on 2 cores)"
start=$(date +%s)
cmake --build "$BUILD" --target bitcoind bitcoin-cli >&2
log "built in $(( $(date +%s) - start )) s"

tmp="$PREFIX.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
cp "$BUILD/bin/bitcoind" "$BUILD/bin/bitcoin-cli" "$tmp/bin/"
strip "$tmp/bin/bitcoind" "$tmp/bin/bitcoin-cli" 2>/dev/null || true
rm -rf "$PREFIX"
mv "$tmp" "$PREFIX"
rm -rf "$BUILD"
log "installed: $BITCOIND"
echo "$BITCOIND"
