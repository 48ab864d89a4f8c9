# Shared helpers for scripts/*.sh (sourced, not run).

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
# ensure_cmd COMMAND DEBIAN_PACKAGE: install the package if the command is missing.
ensure_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null \
        || die "could not install $2"
}

ensure_rust() {
    command -v cargo >/dev/null 2>&1 \
        || die "cargo is not installed: berth needs Rust 1.85 or newer (https://rustup.rs)"
}
