#!/usr/bin/env bash
# Run every benchmark and write bench/RESULTS.md.
# Usage: bench/run.sh ASTRO_REPO    (a local clone or mirror of withastro/astro)
set -euo pipefail
cd "$(dirname "$0")/.."
ASTRO=${1:?usage: bench/run.sh ASTRO_REPO}
./bench/setup.sh
. scripts/lib.sh
# One Docker Engine for the deploy benchmark and the load tests, stopped at the end.
if [ -z "${DOCKER_HOST:-}" ]; then
    trap stop_dockerd EXIT
    start_dockerd
fi
OUT=bench/RESULTS.md
{
    echo "# Benchmark results"
    echo
    echo "Produced by \`bench/run.sh <astro clone>\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m), $(git --version), commit $(git rev-parse --short HEAD))."
    echo "Times are whole-process wall clock from hyperfine (\`-N\`, no shell); ratios compare medians from the same run."
    echo
    echo "## Commit-msg hook: \`berth lint commit --edit\` vs commitlint vs cocogitto"
    echo
    echo "Target: berth's median at most 5 ms."
    echo
    ./bench/lint.sh
    echo
    echo "## \`berth affected\` over 10,000+ commits of withastro/astro"
    echo
    echo "Target: at most 1.5x the time of \`git log --name-only --first-parent\` over the same range."
    echo "\`berth affected --first-parent\` walks the same commits as that peer; by default berth also reads the"
    echo "commits of merged branches (their messages name tasks), which \`git log --name-only\` without"
    echo "--first-parent shows costs git itself."
    echo
    ./bench/affected.sh "$ASTRO"
    echo
    echo "## Rollback and deploy overhead (compose runtime, real Docker Engine)"
    echo
    echo "Targets: a rollback to a retained image answers within 3 s (median); berth adds at most 10% over the operations it runs."
    echo
    ./bench/deploy.sh
    echo
    echo "## Backup and restore of a 1 GB+ database (real PostgreSQL)"
    echo
    echo "Goals: \`berth backup\` faster than both peers and smaller than \`pg_dump | gzip\`; \`berth restore\` at least 2x faster than \`gunzip | psql\`."
    echo "Produced by \`bench/backup.sh 1.4\` (page cache dropped before each run where permitted)."
    echo
    ./bench/backup.sh 1.4 2>/dev/null
    echo
    echo "## Requests dropped during deploys and rollbacks (integration tests, four clients through nginx)"
    echo
    echo "From \`cargo test -p berth --test all -- --nocapture deploy_redeploy_rollback a_stop_start compose_deploy_redeploy\`:"
    echo "berth's deploy + rollback on both runtimes, and the seed's stop/start deploy of the same 2 s-boot app."
    echo
    echo '```'
    cargo test -q -p berth --test all -- --nocapture deploy_redeploy_rollback a_stop_start compose_deploy_redeploy 2>&1 \
        | grep -E "^(zero-downtime|compose zero-downtime|stop/start deploy):"
    echo '```'
    echo
    echo "## \`berth serve\`: /metrics and /api/products under load; RSS over a 10-minute probe soak"
    echo
    echo "Targets: at least 2,000 req/s for \`/metrics\` and \`/api/products\` with 20 products; memory flat while probing."
    echo "From \`bench/serve.sh 10 10 8\` (10 s per endpoint, 10-minute soak, 8 connections):"
    echo
    ./bench/serve.sh 10 10 8
    echo
    echo "### One collector refresh with a 200,000-record audit log, before and after the incremental reader"
    echo
    echo "From \`bench/serve_refresh.sh 200000 2ace088 20\` (2ace088: the last commit that re-read the whole log every refresh)."
    echo
    ./bench/serve_refresh.sh 200000 2ace088 20
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
