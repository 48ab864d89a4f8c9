#!/usr/bin/env bash
# `berth affected` over at least 10,000 first-parent commits of a real public
# monorepo (withastro/astro: pnpm + turbo), side by side with
# `git log --name-only --first-parent` over the same range, and with
# `turbo ls --affected` on the same base.
# Usage: bench/affected.sh SOURCE_REPO [RUNS]   (after bench/setup.sh)
#   SOURCE_REPO: a local clone or mirror of withastro/astro (it is cloned again
#   into a temp dir; nothing of it is committed here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SRC=${1:?usage: bench/affected.sh SOURCE_REPO [RUNS]}
RUNS=${2:-10}
BERTH=$ROOT/target/release/berth
TURBO=$ROOT/bench/.cache/node/node_modules/.bin/turbo
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git clone -q "$SRC" "$WORK/astro" 2>/dev/null || git clone -q --no-checkout "$SRC" "$WORK/astro"
cp "$ROOT/bench/fixtures/astro.berth.toml" "$WORK/astro/berth.toml"
cd "$WORK/astro"
BASE=$(git rev-list --first-parent HEAD | sed -n 10001p)
[ -n "$BASE" ] || { echo "the repository has fewer than 10,001 first-parent commits" >&2; exit 2; }
FP=$(git rev-list --count --first-parent "$BASE..HEAD")
ALL=$(git rev-list --count "$BASE..HEAD")
echo "range $BASE..HEAD: $FP first-parent commits, $ALL commits in all" >&2
# Rename detection needs blob contents; berth lists both sides of a rename with
# --no-renames, so the peer runs the same diff (and mirrors may lack large blobs).
PEER="git log --no-renames --name-only --first-parent $BASE..HEAD"
"$BERTH" affected --base "$BASE" --format github 2>/dev/null
cmds=(-n "git log --name-only --first-parent" "$PEER"
      -n "berth affected --base" "$BERTH affected --base $BASE --format github"
      -n "berth affected --base --first-parent" "$BERTH affected --base $BASE --first-parent --format github")
TURBO_OK=0
if [ -x "$TURBO" ] && git checkout -q HEAD -- . 2>/dev/null && \
   TURBO_TELEMETRY_DISABLED=1 TURBO_SCM_BASE=$BASE "$TURBO" ls --affected --output=json >/dev/null 2>"$WORK/turbo.err"; then
    TURBO_OK=1
    cmds+=(-n "turbo ls --affected" "env TURBO_TELEMETRY_DISABLED=1 TURBO_SCM_BASE=$BASE $TURBO ls --affected --output=json")
else
    echo "turbo ls --affected could not run here: $(tail -3 "$WORK/turbo.err" 2>/dev/null)" >&2
fi
hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$WORK/aff.json" "${cmds[@]}" >&2
python3 - "$WORK/aff.json" "$FP" "$ALL" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
print(f"Range: {sys.argv[2]} first-parent commits ({sys.argv[3]} in all).")
print()
print("| command | median | mean ± σ | ratio to git log (median) |")
print("|---|---:|---:|---:|")
for x in r:
    print(f"| `{x['command'].split(' /')[0][:60]}` | {x['median']*1000:.0f} ms | {x['mean']*1000:.0f} ± {x['stddev']*1000:.0f} ms | {x['median']/base:.2f}x |")
PY
