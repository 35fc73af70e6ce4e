#!/usr/bin/env bash
# The test command: prepares this machine (Docker, the test image; see prepare.sh), then runs
# every test of the workspace with nextest. Extra arguments go to nextest, e.g. `-E 'test(up)'`,
# and then it is one nextest run of what they select.
#
# The whole suite is two nextest runs side by side: the Ansible role's test alone, and every
# other test on the profile's threads (three for `ci`: .config/nextest.toml). The Ansible test
# takes four to seven minutes of ansible-playbook over five systemd hosts; in a thread of the
# suite's it held one of them for those minutes while the cores stood 45 % idle.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/dev/prepare.sh
profile="${NEXTEST_PROFILE:-ci}"
# --workspace also rebuilds the binaries the end-to-end tests start.
nextest=(cargo nextest run --workspace --locked --profile "$profile")
if [ $# -gt 0 ]; then
  exec "${nextest[@]}" "$@"
fi
apart='package(nexus-tests) & test(/^ansible::/)'
"${nextest[@]}" --no-run
log="${CARGO_TARGET_DIR:-target}/nextest-apart.log"
"${nextest[@]}" -E "$apart" >"$log" 2>&1 &
beside=$!
trap 'kill "$beside" 2>/dev/null || true' EXIT
status=0
"${nextest[@]}" -E "not ($apart)" || status=$?
wait "$beside" || status=$?
trap - EXIT
echo "== the test run beside the rest: $apart"
cat "$log"
exit "$status"
