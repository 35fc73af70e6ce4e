#!/usr/bin/env bash
# The test command: prepares this machine (Docker, the test image; see prepare.sh), then runs
# every test of the workspace with nextest. Extra arguments go to nextest, e.g. `-E 'test(up)'`,
# and then it is one nextest run of what they select.
#
# The whole suite is two nextest runs side by side, each on nextest's usual two threads: the
# tests that mostly wait, and every other test. The Ansible role's test takes about four
# minutes, nearly all of it waiting on ansible-playbook and five systemd hosts (about 40 s of
# CPU); the others apart wait 20-50 s each on a policy's or a certificate's seconds, a
# workspace kept busy, or Prometheus's scrapes, for 10 s of CPU or less (measured under
# /usr/bin/time, 2026-12-06). In threads of the suite's they held one of the two for minutes
# while the cores stood 45 % idle. None of them times an election or a dead host: those are the
# serial group's (.config/nextest.toml), which stays in the other run.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/dev/prepare.sh
profile="${NEXTEST_PROFILE:-ci}"
# --workspace also rebuilds the binaries the end-to-end tests start.
nextest=(cargo nextest run --workspace --locked --profile "$profile")
if [ $# -gt 0 ]; then
  exec "${nextest[@]}" "$@"
fi
apart='package(nexus-tests) & (test(/^ansible::/)
  | test(=activity::exec_logs_port_traffic_and_sync_keep_a_docker_workspace_in_use)
  | test(=fleet_security::certificates_of_seconds_renew_and_an_expired_host_re_enrols)
  | test(=policies::an_idle_workspace_is_stopped_with_its_reason_and_a_busy_one_is_not)
  | test(=policies::the_lifetime_destroys_only_after_two_notices_and_spares_held_workspaces)
  | test(=scrape::a_scraped_fleet_exports_what_the_alerts_and_the_dashboard_read))'
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
