#!/usr/bin/env bash
# Mutation proof for the tests that guard berth's claims: each tests/mutants/NAME.patch
# breaks one behaviour of the product (not of the tests); the test(s) it names must then fail.
#
#   scripts/mutants.sh [--write FILE] [--baseline] [NAME...]
#
# For each mutant (all of tests/mutants/*.patch, or the NAMEs given): apply the patch with
# `git apply` (undone with `git apply -R` by a trap, whatever happens), build the tests, run
# each named test alone, and record PASS when the test failed (as it must) with the first line
# of its failure, or FAIL when it still passed (the test cannot see the breakage). Prints a
# markdown table; --write FILE also writes it to FILE with the command, commit and date
# (rows of mutants not named this time are kept from FILE, so mutants can be run one by one).
# --baseline first runs every named test on the unpatched tree (each must pass, or a mutant's
# PASS would prove nothing). Exits 1 if any mutant survived or anything could not be run.
#
# A patch starts with header lines before its diff:
#   # test: deploy::some_test_name       (one line per test; run with --exact)
#   # breaks: what the patch breaks      (shown in the table)
#   # timeout: 1800                      (seconds per test, optional; default 1800)
# Make one with `git diff > tests/mutants/NAME.patch` on a clean tree, then add the header.
#
# Compose tests need DOCKER_HOST (and the Python tests BERTH_TEST_PYTHON*) exported as for
# scripts/test.sh's own run. Slow: every mutant rebuilds berth. Not part of .ci/run.
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
mutants_dir=tests/mutants
write=""
baseline=0
names=()
invocation="scripts/mutants.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --write) write=${2:?--write needs a file}; shift 2 ;;
        --baseline) baseline=1; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option: $1" >&2; exit 2 ;;
        *) names+=("$1"); shift ;;
    esac
done
if [ ${#names[@]} -eq 0 ]; then
    for p in "$mutants_dir"/*.patch; do names+=("$(basename "$p" .patch)"); done
fi
for n in "${names[@]}"; do
    [ -f "$mutants_dir/$n.patch" ] || { echo "no such mutant: $mutants_dir/$n.patch" >&2; exit 2; }
done

# The tree's state, leaving out the file --write is asked to (re)write.
tree_state() {
    if [ -n "$write" ]; then
        git status --porcelain --untracked-files=all -- . ":(exclude)$write"
    else
        git status --porcelain --untracked-files=all
    fi
}
before=$(tree_state)
commit=$(git rev-parse --short HEAD)
[ -z "$before" ] || commit="$commit (+ uncommitted changes)"
started=$(date -u '+%Y-%m-%d %H:%M')
logdir=$(mktemp -d)
applied=""

restore() {
    if [ -n "$applied" ]; then
        git apply -R "$applied" || echo "error: could not revert $applied: check git status" >&2
        applied=""
    fi
}
on_exit() {
    local rc=$?
    restore
    local after
    after=$(tree_state)
    if [ "$after" != "$before" ]; then
        echo "error: the tree differs from before the run:" >&2
        diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") >&2 || true
        rc=1
    fi
    rm -rf "$logdir"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# header NAME KEY: the values of the `# KEY:` lines before the patch's diff.
header() { sed -n "/^diff --git/q; s/^# $2: *//p" "$mutants_dir/$1.patch"; }

# Tests must not leave insta's .snap.new files behind (the tree must end as it began).
export INSTA_UPDATE=no
export CARGO_TERM_COLOR=never

build() { cargo test -q -p berth --test all --no-run >"$logdir/build.log" 2>&1; }

# run_test NAME TIMEOUT LOG: 0 passed, 1 failed, 2 did not run (no such test, hung, ...)
run_test() {
    local rc=0
    timeout -k 30 "$2" cargo test -q -p berth --test all -- --exact "$1" --test-threads=1 \
        >"$3" 2>&1 || rc=$?
    if grep -q "^test result: ok. 1 passed" "$3"; then return 0; fi
    if grep -q "^test result: FAILED. 0 passed; 1 failed" "$3"; then return 1; fi
    [ "$rc" -eq 124 ] && echo "timed out after $2 s" >>"$3"
    return 2
}

# The first line of the panic message (after "panicked at file:line:col:"; blank lines skipped).
first_failure_line() {
    awk 'found && /^(stack backtrace:|note: )/ { print "(the assertion has no message)"; exit }
         found && NF { print; exit }
         /panicked at/ { found = 1; if (sub(/.*panicked at [^:]*:[0-9]+:[0-9]+: ?/, "") && NF) { print; exit } }' "$1" \
        | sed 's/^ *//' | cut -c1-160 | sed 's/|/\\|/g'
}

rows=()
bad=0
if [ "$baseline" -eq 1 ]; then
    echo "==> baseline: the unpatched tree" >&2
    build || { cat "$logdir/build.log" >&2; echo "error: the unpatched tree does not build" >&2; exit 1; }
    for n in "${names[@]}"; do
        while IFS= read -r t; do
            [ -n "$t" ] || continue
            echo "==> baseline $t" >&2
            if ! run_test "$t" "$(header "$n" timeout | head -1 | grep . || echo 1800)" "$logdir/t.log"; then
                tail -30 "$logdir/t.log" >&2
                echo "error: $t does not pass on the unpatched tree: no mutant can be judged by it" >&2
                exit 1
            fi
        done < <(header "$n" test)
    done
fi

for n in "${names[@]}"; do
    patch="$mutants_dir/$n.patch"
    breaks=$(header "$n" breaks | head -1 | sed 's/|/\\|/g')
    limit=$(header "$n" timeout | head -1)
    limit=${limit:-1800}
    tests=()
    while IFS= read -r t; do [ -n "$t" ] && tests+=("$t"); done < <(header "$n" test)
    if [ ${#tests[@]} -eq 0 ]; then
        rows+=("| $n | - | $breaks | ERROR | the patch names no \`# test:\` |"); bad=1; continue
    fi
    echo "==> mutant $n" >&2
    if ! git apply --check "$patch" 2>"$logdir/apply.log"; then
        rows+=("| $n | - | $breaks | ERROR | does not apply: $(head -1 "$logdir/apply.log" | sed 's/|/\\|/g') |"); bad=1; continue
    fi
    git apply "$patch"
    applied=$patch
    if ! build; then
        msg=$(grep -m1 '^error' "$logdir/build.log" | cut -c1-160 | sed 's/|/\\|/g')
        rows+=("| $n | - | $breaks | ERROR | the mutant does not build: $msg |"); bad=1
        restore; continue
    fi
    for t in "${tests[@]}"; do
        echo "==>   $t" >&2
        s=0
        run_test "$t" "$limit" "$logdir/t.log" || s=$?
        case $s in
            1) rows+=("| $n | \`$t\` | $breaks | PASS | $(first_failure_line "$logdir/t.log") |") ;;
            0) rows+=("| $n | \`$t\` | $breaks | FAIL | the test still passed |"); bad=1 ;;
            *) rows+=("| $n | \`$t\` | $breaks | ERROR | did not run: $(tail -1 "$logdir/t.log" | cut -c1-120 | sed 's/|/\\|/g') |"); bad=1 ;;
        esac
    done
    restore
done

stamp="$commit | $started"
table() {
    echo "| mutant | test | the patch breaks | result | first line of the test's failure | commit | date (UTC) |"
    echo "|---|---|---|---|---|---|---|"
    local p n
    for p in "$mutants_dir"/*.patch; do
        n=$(basename "$p" .patch)
        if printf '%s\n' "${names[@]}" | grep -qx "$n"; then
            printf '%s\n' "${rows[@]}" | awk -F'|' -v n=" $n " -v s="$stamp" '$2==n { print $0 " " s " |" }'
        elif [ -n "$write" ] && [ -f "$write" ] && grep -q "^| $n |" "$write"; then
            # Not run this time: the row of its last run stays, with that run's commit and date.
            awk -F'|' -v n=" $n " '$2==n' "$write"
        elif [ -n "$write" ]; then
            echo "| $n | $(header "$n" test | sed 's/.*/`&`/' | paste -sd' ') | $(header "$n" breaks | head -1 | sed 's/|/\\|/g') | NOT RUN | | | |"
        fi
    done
}
table >"$logdir/table.md"
if [ -n "$write" ]; then
    {
        echo "# Mutants: each strengthened test fails against a deliberately broken build"
        echo
        echo "Written by \`scripts/mutants.sh --write $write\` (last run: \`$invocation\` at commit $commit,"
        echo "$started to $(date -u '+%H:%M') UTC). Each mutant is a patch in \`tests/mutants/\` that breaks the"
        echo "product, not the test; PASS means the test it names failed against it, as it must; FAIL"
        echo "means the test still passed. Rows of mutants not run again keep their own commit and date."
        echo
        cat "$logdir/table.md"
    } >"$logdir/out.md"
    mkdir -p "$(dirname "$write")"
    cp "$logdir/out.md" "$write.tmp"
    mv "$write.tmp" "$write"
fi
cat "$logdir/table.md"
exit "$bad"
