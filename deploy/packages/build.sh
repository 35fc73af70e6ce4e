#!/usr/bin/env bash
# Builds the Debian packages nexus-coordinator, nexus-agent and nexus (the CLI) into OUT_DIR
# (default: $CARGO_TARGET_DIR/debian): the release binaries, the man pages and completions that
# nexus-packaging makes from the commands' own definitions, and what each crate's
# [package.metadata.deb] lists (units, the nexus user, tmpfiles, example configs as conffiles).
#
#   deploy/packages/build.sh [OUT_DIR]
#   deploy/packages/build.sh --from-dev-build [--revision N] [OUT_DIR]
#
# --from-dev-build packs the binaries of the dev profile already built in $CARGO_TARGET_DIR/debug
# (as the tests do: they test the packaging, and a second, optimised build of RocksDB would cost
# a CI run 15 minutes).
# Needs cargo-deb (`cargo install --locked cargo-deb`; deploy/dev/prepare.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."

from_dev=false
fast=()
revision=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from-dev-build) from_dev=true; shift ;;
    # The Debian revision (0.1.0-N): a rebuilt package to upgrade to, with the same sources.
    --revision) revision=(--deb-revision "$2"); shift 2 ;;
    *) break ;;
  esac
done
target="${CARGO_TARGET_DIR:-$PWD/target}"
out="${1:-$target/debian}"
mkdir -p "$out"
packages=(nexus-coordinator nexus-agent nexus-cli)

if $from_dev; then
  # A target dir of its own whose release/ holds the dev binaries: cargo-deb takes binaries
  # from target/release/ and is told not to build.
  # Not built here: `cargo build` would unify features without the dev-dependencies' and
  # rebuild what the test run just built. The test run (or `cargo build --workspace`) makes them.
  for binary in nexus-coordinator nexus-agent nexus nexus-packaging; do
    [ -x "$target/debug/$binary" ] || {
      echo "build.sh: no $target/debug/$binary; build the workspace first (cargo build --workspace --bins)" >&2
      exit 1
    }
  done
  stage=$(mktemp -d "${TMPDIR:-/tmp}/nexus-packages.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/release"
  for binary in nexus-coordinator nexus-agent nexus nexus-packaging; do
    ln -f "$target/debug/$binary" "$stage/release/$binary" 2>/dev/null ||
      cp "$target/debug/$binary" "$stage/release/$binary"
  done
  built="$stage"
  # Quicker compression: these packages are made to be installed by a test and thrown away.
  # The system's gzip: the coordinator's package in 3.3 s of CPU and unpacked in 0.35 s, where
  # xz (--fast) took 7.9 s and 1.35 s. (cargo-deb's own gzip with --fast took minutes.)
  fast=(--fast --compress-system --compress-type gz)
else
  cargo build --locked --release -q -p nexus-coordinator -p nexus-agent -p nexus-cli -p nexus-packaging --bins
  built="$target"
fi

rm -rf "$built/release/packaging"
"$built/release/nexus-packaging" assets "$built/release/packaging" >/dev/null
for package in "${packages[@]}"; do
  CARGO_TARGET_DIR="$built" cargo deb --locked --no-build "${fast[@]}" "${revision[@]}" -p "$package" -o "$out" >/dev/null
done
ls "$out"/*.deb
