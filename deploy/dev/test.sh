#!/usr/bin/env bash
# The test command: prepares this machine (Docker, the test image; see prepare.sh), then runs
# every test of the workspace with nextest. Extra arguments go to nextest, e.g. `-E 'test(up)'`.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/dev/prepare.sh
# --workspace also rebuilds the binaries the end-to-end tests start.
exec cargo nextest run --workspace --locked --profile "${NEXTEST_PROFILE:-ci}" "$@"
