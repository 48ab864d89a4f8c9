#!/usr/bin/env bash
# `berth affected` over at least 10,000 first-parent commits of a real public
# monorepo (withastro/astro: pnpm + turbo), side by side with
# `git log --name-only --first-parent` over the same range, and with
# `turbo ls --affected` on the same base.
# Usage: bench/affected.sh SOURCE_REPO [RUNS=10] [COMMITS=10000]   (after bench/setup.sh)
#   SOURCE_REPO: a local clone or mirror of withastro/astro (it is cloned again
#   into a temp dir; nothing of it is committed here).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROOT=$PWD
SRC=${1:?usage: bench/affected.sh SOURCE_REPO [RUNS] [COMMITS]}
RUNS=${2:-10}
COMMITS=${3:-10000}
HEADER=$(bench_header "\`berth affected\` over $COMMITS first-parent commits of withastro/astro" \
    "Target: at most 1.5x the time of \`git log --name-only --first-parent\` over the same range. Whole-process wall clock from hyperfine (\`-N\`, no shell), $RUNS runs each; ratios compare medians of the same run. By default berth also reads the commits of merged branches (their messages name tasks); \`--first-parent\` walks the same commits as the peer." \
    bench/affected.sh "$@")
BERTH=$ROOT/target/release/berth
TURBO=$ROOT/bench/.cache/node/node_modules/.bin/turbo
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git clone -q --no-checkout "$SRC" "$WORK/astro"
cd "$WORK/astro"
# Only what turbo reads (package manifests, lockfile, turbo.json) is checked out;
# the rest stays in git (mirrors may lack large blobs, which a full checkout needs).
git sparse-checkout set --no-cone 'package.json' 'turbo.json' '/pnpm-lock.yaml' '/pnpm-workspace.yaml' '/.npmrc' >/dev/null 2>&1 || true
git checkout -q HEAD >/dev/null 2>&1 || true
cp "$ROOT/bench/fixtures/astro.berth.toml" berth.toml
BASE=$(git rev-list --first-parent HEAD | sed -n "$((COMMITS + 1))p")
[ -n "$BASE" ] || { echo "the repository has fewer than $((COMMITS + 1)) first-parent commits" >&2; exit 2; }
FP=$(git rev-list --count --first-parent "$BASE..HEAD")
ALL=$(git rev-list --count "$BASE..HEAD")
echo "range $BASE..HEAD: $FP first-parent commits, $ALL commits in all" >&2
# Rename detection needs blob contents; berth lists both sides of a rename with
# --no-renames, so the peer runs the same diff (and mirrors may lack large blobs).
PEER="git log --no-renames --name-only --first-parent $BASE..HEAD"
"$BERTH" affected --base "$BASE" --format github >&2 2>/dev/null
ALL_PEER="git log --no-renames --name-only $BASE..HEAD"
cmds=(-n "git log --name-only --first-parent" "$PEER"
      -n "git log --name-only (every commit, the walk berth does by default)" "$ALL_PEER"
      -n "berth affected --base" "$BERTH affected --base $BASE --format github"
      -n "berth affected --base --first-parent" "$BERTH affected --base $BASE --first-parent --format github")
TURBO_OK=0
if [ -x "$TURBO" ] && \
   TURBO_TELEMETRY_DISABLED=1 TURBO_SCM_BASE=$BASE "$TURBO" ls --affected --output=json >/dev/null 2>"$WORK/turbo.err"; then
    TURBO_OK=1
    cmds+=(-n "turbo ls --affected" "env TURBO_TELEMETRY_DISABLED=1 TURBO_SCM_BASE=$BASE $TURBO ls --affected --output=json")
else
    echo "turbo ls --affected could not run here: $(tail -3 "$WORK/turbo.err" 2>/dev/null)" >&2
fi
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$WORK/aff.json" "${cmds[@]}" >&2
TURBO_N=$(TURBO_TELEMETRY_DISABLED=1 TURBO_SCM_BASE=$BASE "$TURBO" ls --affected --output=json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"]["count"])' 2>/dev/null || echo "?")
BERTH_N=$("$BERTH" affected --base "$BASE" --format json 2>/dev/null | python3 -c 'import json,sys; v=json.load(sys.stdin); print("%d of %d products affected, %d commits read" % (len(v["affected"]), len(v["products"]), v["commits"]))')
printf '%s\n\n' "$HEADER"
python3 - "$WORK/aff.json" "$FP" "$ALL" "$BERTH_N" "$TURBO_N" "$BASE" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
print(f"Range `{sys.argv[6][:12]}..HEAD`: {sys.argv[2]} first-parent commits ({sys.argv[3]} in all).")
print(f"berth: {sys.argv[4]}; turbo: {sys.argv[5]} packages affected.")
print()
print("| command | median | mean ± σ | ratio to git log (median) |")
print("|---|---:|---:|---:|")
for x in r:
    print(f"| `{x['command'].split(' /')[0][:70]}` | {x['median']*1000:.0f} ms | {x['mean']*1000:.0f} ± {x['stddev']*1000:.0f} ms | {x['median']/base:.2f}x |")
print()
by = {x["command"].split(" /")[0]: x["median"] / base for x in r}
for name in ["berth affected --base", "berth affected --base --first-parent"]:
    v = by[name]
    print(f"`{name}`: {v:.2f}x git log's median, target at most 1.5x: {'**met**' if v <= 1.5 else '**not met**'}.  ")
PY
