#!/usr/bin/env bash
# `berth lint commit --edit FILE` as a commit-msg hook, side by side with
# commitlint (config-conventional) and cocogitto's `cog verify`, on the same
# messages. Whole-process wall time, hyperfine without a shell (-N).
# Usage: bench/lint.sh [RUNS]   (after bench/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROOT=$PWD
CACHE=$ROOT/bench/.cache
RUNS=${1:-300}
BERTH=$ROOT/target/release/berth
COMMITLINT=$CACHE/node/node_modules/.bin/commitlint
COG=$CACHE/cargo/bin/cog
for b in "$BERTH" "$COMMITLINT" "$COG"; do [ -x "$b" ] || { echo "missing $b: run bench/setup.sh" >&2; exit 2; }; done
HEADER=$(bench_header "Commit-msg hook: \`berth lint commit --edit\` vs commitlint vs cocogitto" \
    "Target: berth's median at most 5 ms. Whole-process wall clock from hyperfine (\`-N\`, no shell), $RUNS runs each; ratios compare medians of the same run." \
    bench/lint.sh "$@")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r "$ROOT/examples/multi-product/." "$WORK/"
cd "$WORK"
git init -q -b main && git -c user.name=b -c user.email=b@b add -A && git -c user.name=b -c user.email=b@b commit -qm "chore: init (TASK-0-init-bestays)"
echo '{"extends": ["@commitlint/config-conventional"]}' > .commitlintrc.json
ln -s "$CACHE/node/node_modules" node_modules
MSG="feat: implement login (US-001 TASK-001-login-bestays)"
printf '%s\n' "$MSG" > msg.txt
# Every tool must accept the message, or the comparison is meaningless.
"$BERTH" lint commit --edit msg.txt >/dev/null
"$COMMITLINT" --edit msg.txt >/dev/null
"$COG" verify "$MSG" >/dev/null 2>&1

hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$WORK/lint.json" \
    -n "berth lint commit --edit" "$BERTH lint commit --edit msg.txt" \
    -n "berth lint commit --edit --staged (installed hook)" "$BERTH lint commit --edit msg.txt --staged" \
    -n "commitlint --edit" "$COMMITLINT --edit msg.txt" \
    -n "cog verify" "$COG verify '$MSG'" >&2

printf '%s\n\n' "$HEADER"
python3 - "$WORK/lint.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
print("| command | median | mean ± σ | min | ratio to berth (median) |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print(f"| `{x['command']}` | {x['median']*1000:.2f} ms | {x['mean']*1000:.2f} ± {x['stddev']*1000:.2f} ms | {x['min']*1000:.2f} ms | {x['median']/base:.1f}x |")
print()
ms = base * 1000
print(f"Target: {'**met**' if ms <= 5 else '**not met**'}: berth's median is {ms:.2f} ms (target at most 5 ms); "
      f"the installed hook (`--staged`) {r[1]['median'] * 1000:.2f} ms; commitlint takes {r[2]['median'] / base:.1f}x "
      f"and cog verify {r[3]['median'] / base:.1f}x berth's median.")
PY
