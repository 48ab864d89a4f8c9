# Shared by the bench scripts (sourced, not run): the header every section of
# bench/RESULTS.md starts with, so a section says how, where and from what it was made.

# bench_commit: the short commit of the tree, with -dirty when anything but
# bench/RESULTS.md (which bench/run.sh rewrites as it goes) differs from it.
bench_commit() {
    local c
    c=$(git rev-parse --short HEAD)
    if [ -n "$(git status --porcelain --untracked-files=no -- . ':!bench/RESULTS.md' 2>/dev/null)" ]; then
        c="$c-dirty"
    fi
    printf '%s\n' "$c"
}

# bench_machine: cores, architecture and CPU model.
bench_machine() {
    local model
    model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)
    printf '%s cores, %s%s\n' "$(nproc)" "$(uname -m)" "${model:+, $model}"
}

# bench_header TITLE GOAL SCRIPT [ARG...]: the section's title, its goal or target,
# the exact command line (SCRIPT as run from the repository root, with its
# arguments), the commit, the UTC date and the machine.
bench_header() {
    local title=$1 goal=$2 script=$3
    shift 3
    local cmd=$script a
    for a in "$@"; do
        cmd="$cmd $(printf '%q' "$a")"
    done
    printf '## %s\n\n' "$title"
    printf '%s\n\n' "$goal"
    printf 'Command: `%s`  \n' "$cmd"
    printf 'Commit %s, %s UTC, %s.\n\n' "$(bench_commit)" "$(date -u '+%Y-%m-%d %H:%M')" "$(bench_machine)"
}

# bench_verdict VALUE OP LIMIT: "met" or "not met" for VALUE OP LIMIT (OP: <= < >= >).
bench_verdict() {
    python3 -c '
import sys
v, op, lim = float(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ok = {"<=": v <= lim, "<": v < lim, ">=": v >= lim, ">": v > lim}[op]
print("met" if ok else "not met")' "$1" "$2" "$3"
}
