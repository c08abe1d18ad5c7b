#!/usr/bin/env bash
# CI step: build and run the service images for real with podman.
#
#   .ci/containers.sh            # install what is missing, lint, build, test
#
# 1. installs podman + runc + mmdebstrap via apt-get when missing (needs root);
# 2. writes podman configs under .work/podman/ (runc, cgroupfs, host ulimits,
#    overlay storage under .work/podman/storage, no short-name registry lookup);
# 3. builds a stand-in for python:3.12-slim from Debian packages (this machine
#    cannot pull from Docker Hub), cached: skipped when the image exists;
# 4. runs hadolint on both Dockerfiles;
# 5. runs `pytest tests/containers -m containers` with the project venv.
#
# Environment knobs: MEDROBOTICS_CONTAINER_BASE (base image for the test build;
# default: the stand-in), STANDIN_REBUILD=1 (rebuild the stand-in).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$ROOT/.work/podman"
STANDIN="localhost/python:3.12-slim-standin"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
start=$(date +%s)
log() { printf '[containers %3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# --- 1. packages ------------------------------------------------------------
PKGS=(podman runc conmon containernetworking-plugins golang-github-containers-common
      slirp4netns mmdebstrap iptables ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then echo "need root to apt-get install ${missing[*]}" >&2; exit 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. podman configuration --------------------------------------------------
mkdir -p "$WORK/tmp"
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
cat > "$WORK/containers.conf" <<CONF
# Written by .ci/containers.sh
[containers]
# crun and podman's default ulimits do not work on this host
default_ulimits = ["nofile=${hard_nofile}:${hard_nofile}", "nproc=32768:32768"]
# host networking: no bridge, no iptables rules, no ip_forward change
netns = "host"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$WORK/events.log"
tmp_dir = "$WORK/tmp"
static_dir = "$WORK/storage/libpod"
volume_path = "$WORK/storage/volumes"
CONF
cat > "$WORK/storage.conf" <<CONF
# Written by .ci/containers.sh
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
CONF
cat > "$WORK/registries.conf" <<CONF
# Written by .ci/containers.sh: only fully qualified names, never guess a registry
unqualified-search-registries = []
short-name-mode = "enforcing"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$WORK/registries.conf"
log "$(podman --version); $(runc --version | head -1)"

# --- 3. stand-in base image ---------------------------------------------------
if [ "${STANDIN_REBUILD:-0}" = 1 ]; then podman rmi -f "$STANDIN" >/dev/null 2>&1 || true; fi
if podman image exists "$STANDIN"; then
    log "stand-in base $STANDIN cached"
else
    log "building stand-in base $STANDIN with mmdebstrap ($SUITE)"
    tarball="$WORK/standin.tar"
    # The host's extra CAs (TLS-intercepting proxy in front of PyPI) are
    # trusted inside the image; PIP_CERT/SSL_CERT_FILE point at the bundle.
    # shellcheck disable=SC2016  # "$1" in the hooks is expanded by mmdebstrap, not here
    mmdebstrap --quiet --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"; fi' \
        --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$tarball" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main"
    podman import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        "$tarball" "$STANDIN" >/dev/null
    rm -f "$tarball"
    log "stand-in base built"
fi
export MEDROBOTICS_CONTAINER_BASE="${MEDROBOTICS_CONTAINER_BASE:-$STANDIN}"
# Untagged images are earlier runs' build stages: the layer cache. Keep a day's worth.
podman image prune -f --filter until=24h >/dev/null

# --- 4. lint ------------------------------------------------------------------
log "hadolint"
.ci/hadolint.sh

# --- 5. build-and-run test ----------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    echo "missing .venv: python3 -m venv .venv && .venv/bin/pip install -r requirements/dev.lock && .venv/bin/pip install --no-deps -e ." >&2
    exit 1
fi
log "pytest tests/containers -m containers (base: $MEDROBOTICS_CONTAINER_BASE)"
rc=0
CI="${CI:-true}" .venv/bin/python -m pytest tests/containers -m containers -v -p no:cacheprovider "$@" || rc=$?
log "done (rc=$rc)"
exit "$rc"
