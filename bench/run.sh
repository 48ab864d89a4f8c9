#!/usr/bin/env bash
# Regenerate bench/RESULTS.md: every section, or only the named ones.
# Usage: bench/run.sh [--astro REPO] [SECTION...]
#   SECTION: lint affected deploy backup zero-downtime rollback swarm serve serve-refresh limits demo soak shared-build
#   (none named: all of them; `affected` needs --astro, a local clone or mirror of
#   withastro/astro).
# Each section is printed whole by the script that measured it (title, target,
# command line, commit, date, machine, tables, computed conclusions) and spliced
# into RESULTS.md between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` as soon
# as that script succeeds (temp file, fsync, rename); the other sections are left
# as they are. A script that fails leaves its section untouched and run.sh exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(lint affected deploy backup zero-downtime rollback swarm serve serve-refresh limits demo soak shared-build)
usage() { echo "usage: bench/run.sh [--astro REPO] [SECTION...]   sections: ${ALL[*]}" >&2; exit 2; }
ASTRO=
SECTIONS=()
while [ $# -gt 0 ]; do
    case $1 in
        --astro) [ $# -ge 2 ] || usage; ASTRO=$2; shift 2 ;;
        --astro=*) ASTRO=${1#--astro=}; shift ;;
        -h|--help) usage ;;
        -*) echo "bench/run.sh: unknown option $1" >&2; usage ;;
        *)
            ok=0
            for s in "${ALL[@]}"; do [ "$s" = "$1" ] && ok=1; done
            [ $ok -eq 1 ] || { echo "bench/run.sh: unknown section \`$1\`" >&2; usage; }
            SECTIONS+=("$1"); shift ;;
    esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=("${ALL[@]}")
wants() { local s; for s in "${SECTIONS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
if wants affected && [ -z "$ASTRO" ]; then
    echo "bench/run.sh: the affected section needs --astro REPO (a clone or mirror of withastro/astro)" >&2
    exit 2
fi

# The command line of each section: what RESULTS.md's figures come from.
run_section() {
    case $1 in
        lint) ./bench/lint.sh 300 ;;
        affected) ./bench/affected.sh "$ASTRO" 10 ;;
        deploy) ./bench/deploy.sh 5 ;;
        backup) ./bench/backup.sh 1.4 ;;
        zero-downtime) ./bench/zero_downtime.sh ;;
        rollback) ./bench/rollback.sh 10 ;;
        swarm) ./bench/swarm.sh 5 ;;
        serve) ./bench/serve.sh 10 10 8 ;;
        serve-refresh) ./bench/serve_refresh.sh 200000 2ace088 20 ;;
        limits) ./bench/limits.sh 3 ;;
        demo) ./bench/demo.sh 8454bd8 ;;
        soak) ./bench/soak.sh 100 ;;
        shared-build) ./bench/shared_build.sh 5 ;;
    esac
}

if wants lint || wants affected; then
    ./bench/setup.sh
fi
. scripts/lib.sh
PART=$(mktemp)
trap 'rm -f "$PART"; [ -z "${DOCKERD_DIR:-}" ] || stop_dockerd' EXIT
# One Docker Engine for the deploy benchmark and the compose load test, stopped at the end.
if { wants deploy || wants zero-downtime || wants rollback || wants swarm || wants limits || wants shared-build; } && [ -z "${DOCKER_HOST:-}" ]; then
    start_dockerd
fi

OUT=bench/RESULTS.md
# splice NAME FILE: put FILE between NAME's markers in RESULTS.md (appended, with
# its markers, when RESULTS.md has none for it yet), atomically.
splice() {
    python3 - "$OUT" "$1" "$2" <<'PY'
import os, sys
out, name, part = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip("\n") + "\n"
begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
text = open(out).read() if os.path.exists(out) else "# Benchmark results\n"
if text.count(begin) > 1 or text.count(end) > 1:
    sys.exit(f"{out}: the markers of section {name} appear more than once")
if begin in text and end in text and text.index(begin) < text.index(end):
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = f"{head}{begin}\n{part}{end}{tail}"
elif begin in text or end in text:
    sys.exit(f"{out}: section {name} has only one of its markers, or they are out of order")
else:
    text = text.rstrip("\n") + f"\n\n{begin}\n{part}{end}\n"
tmp = f"{out}.tmp.{os.getpid()}"
with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
os.rename(tmp, out)
d = os.open(os.path.dirname(os.path.abspath(out)), os.O_RDONLY)
os.fsync(d)
os.close(d)
PY
}

FAILED=()
for s in "${SECTIONS[@]}"; do
    log "section $s"
    if run_section "$s" >"$PART"; then
        splice "$s" "$PART"
        log "section $s written to $OUT"
    else
        tail -20 "$PART" >&2
        echo "bench/run.sh: section $s failed (the end of its output above); its part of $OUT is left as it was" >&2
        FAILED+=("$s")
    fi
done
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "bench/run.sh: failed sections: ${FAILED[*]}" >&2
    exit 1
fi
