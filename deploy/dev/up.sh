#!/usr/bin/env bash
# Brings up a one-host Nexus fleet on this machine: builds the binaries, then runs `nexus up`
# (a one-node coordinator and an agent, PKI and CLI settings in ~/.local/state/nexus).
# Extra arguments go to `nexus up`, e.g. `--detach`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# What building needs (libclang for RocksDB's bindings, the pinned toolchain's name); installing
# a missing package needs root.
deploy/dev/prepare.sh --build-only
cargo build --locked --workspace --bins
exec cargo run --locked --quiet -p nexus-cli --bin nexus -- up "$@"
