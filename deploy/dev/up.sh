#!/usr/bin/env bash
# Brings up a one-host Nexus fleet on this machine: builds the binaries, then runs `nexus up`
# (a one-node coordinator and an agent, PKI and CLI settings in ~/.local/state/nexus).
# Extra arguments go to `nexus up`, e.g. `--detach`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# What building needs (libclang for RocksDB's bindings, the pinned toolchain's name); installing
# a missing package needs root.
deploy/dev/prepare.sh --build-only
# The same features as the test command's build (see the workspace manifest), so whichever of the
# two runs second reuses what the first compiled.
cargo build --locked --workspace --bins
# The binary itself, not `cargo run -p nexus-cli`: features resolved for one package differ from
# the workspace's, and would build the dependencies again.
target_dir=$(cargo metadata --locked --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "${target_dir}/debug/nexus" up "$@"
