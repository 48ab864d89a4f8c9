#!/usr/bin/env bash
# berth backup / restore vs the seed's `pg_dump | gzip` + `gunzip | psql` and vs
# `pg_dump -Fc` (pg_dump's own gzip), side by side on one generated database of
# at least 1 GB on a PostgreSQL cluster of its own.
# Usage: bench/backup.sh [SIZE_GB]   (default 1.2; builds berth in release mode)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_postgres
ensure_rust
SIZE_GB=${1:-1.2}
cargo build --release --locked -q -p berth
BERTH=$PWD/target/release/berth
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

W=$(mktemp -d /tmp/berth-bench-backup.XXXXXX)
chmod 755 "$W"
mkdir "$W/pg" && chown postgres:postgres "$W/pg"
PORT=25999
cleanup() {
    su postgres -c "$PGBIN/pg_ctl -D $W/pg/data -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
su postgres -c "$PGBIN/initdb -D $W/pg/data -U postgres --auth=trust" >/dev/null
# A server tuned like a small production box: WAL and checkpoints sized for bulk loads.
su postgres -c "$PGBIN/pg_ctl -D $W/pg/data -l $W/pg/log -w start -o '-p $PORT -k $W/pg -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min'" >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
export BERTH_POSTGRES_ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/postgres"

log "generating a database of at least ${SIZE_GB} GB"
psql -Xq -c "CREATE ROLE shop_user LOGIN" -c "CREATE DATABASE shop OWNER shop_user"
ROWS=$(python3 -c "print(int($SIZE_GB * 1024**3 / 190))")
psql -Xq -v ON_ERROR_STOP=1 -d shop <<SQL
SET ROLE shop_user;
CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL, name text NOT NULL, country char(2), created timestamptz NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, total numeric(12,2) NOT NULL,
  items jsonb NOT NULL, note text, created timestamptz NOT NULL);
CREATE TABLE events (at timestamptz NOT NULL, kind text NOT NULL, customer_id bigint, payload text);
INSERT INTO customers (email, name, country, created)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g, (ARRAY['TH','DE','US','FR','JP'])[1 + g % 5],
         timestamptz '2024-01-01' + g * interval '17 seconds'
  FROM generate_series(1, $ROWS / 20) g;
INSERT INTO orders (customer_id, status, total, items, note, created)
  SELECT 1 + (g::bigint * 7919) % ($ROWS / 20), (ARRAY['paid','shipped','refunded','open'])[1 + g % 4], (g % 100000) / 100.0,
         jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (g % 5000), 'qty', 1 + g % 3)),
         CASE WHEN g % 10 = 0 THEN 'gift wrap, leave at the door' END,
         timestamptz '2024-01-01' + g * interval '3 seconds'
  FROM generate_series(1, $ROWS / 2) g;
INSERT INTO events (at, kind, customer_id, payload)
  SELECT timestamptz '2024-01-01' + g * interval '1 second', (ARRAY['view','click','search','login'])[1 + g % 4],
         1 + (g::bigint * 104729) % ($ROWS / 20), md5(g::text)
  FROM generate_series(1, $ROWS / 2) g;
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_created ON orders (created);
CREATE INDEX events_at ON events (at);
CREATE INDEX customers_email ON customers (email);
RESET ROLE;
VACUUM ANALYZE;
SQL
DB_BYTES=$(psql -XAt -d shop -c "SELECT pg_database_size('shop')")

cat > "$W/berth.toml" <<TOML
[project]
name = "bench"

[infra.postgres]
mode = "external"
admin_url_env = "BERTH_POSTGRES_ADMIN_URL"

[products.shop]
database = { name = "shop", role = "shop_user" }
TOML
cd "$W"
git init -q .

now() { date +%s.%N; }
# CPU seconds the cluster has used so far: the postmaster with its reaped children
# (finished backends) plus every live child (checkpointer, WAL writer, ...).
server_cpu() {
    python3 - "$(head -1 "$W/pg/data/postmaster.pid")" <<'PY'
import os, sys
pm, hz, total = sys.argv[1], os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if pid == pm:
        total += sum(int(x) for x in f[11:15])
    elif f[1] == pm:
        total += int(f[11]) + int(f[12])
print(total / hz)
PY
}
declare -A T S C
run() { # name, command...
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    psql -Xq -c CHECKPOINT
    local a c; a=$(now); c=$(server_cpu)
    "$@" >&2
    T[$name]=$(python3 -c "print(round($(now) - $a, 2))")
    sleep 1 # let the postmaster reap the backends so their CPU time is counted
    C[$name]=$(python3 -c "print(round($(server_cpu) - $c, 2))")
}

log "pg_dump -Fp | gzip (the seed)"
run seed_backup sh -c "pg_dump -Fp shop | gzip > seed.sql.gz"
S[seed_backup]=$(stat -c %s seed.sql.gz)
log "pg_dump -Fc (pg_dump's own gzip)"
run fc_backup pg_dump -Fc -f shop.dump shop
S[fc_backup]=$(stat -c %s shop.dump)
log "berth backup shop"
run berth_backup "$BERTH" backup shop
S[berth_backup]=$(stat -c %s backups/shop/*.dump.zst)

log "gunzip | psql into a new database (the seed's restore, without its DROP)"
psql -Xq -c "CREATE DATABASE seed_restore OWNER shop_user"
run seed_restore sh -c "gunzip -c seed.sql.gz | psql -Xq -v ON_ERROR_STOP=1 -d seed_restore >/dev/null"
log "pg_restore -j 1 and -j $(nproc) of the pg_dump -Fc archive (what parallelism buys here)"
psql -Xq -c "CREATE DATABASE ref1 OWNER shop_user" -c "CREATE DATABASE refn OWNER shop_user"
run ref_j1 pg_restore --no-owner -j 1 -d ref1 shop.dump
run ref_jn pg_restore --no-owner -j "$(nproc)" -d refn shop.dump
psql -Xq -c "DROP DATABASE ref1" -c "DROP DATABASE refn"
log "berth restore shop (checksum, pg_restore -j $(nproc) into a new database, row counts, swap)"
run berth_restore env BERTH_LOG=info "$BERTH" restore shop latest --yes

# How long the product cannot read its data: the seed drops the live database first,
# so for it that is the whole restore. For berth, restore once more (not timed above)
# while a client reads the live database every 50 ms, and take the longest gap.
log "berth restore again, with a client reading the live database every 50 ms"
probe() {
    while [ ! -e "$W/probe.stop" ]; do
        local t; t=$(now)
        if psql -XAtq -d shop -c "SELECT 1 FROM orders LIMIT 1" >/dev/null 2>&1; then
            echo "$t ok"
        else
            echo "$t down"
        fi
        sleep 0.05
    done > "$W/probe.log"
}
probe &
PROBE=$!
sleep 1
"$BERTH" restore shop latest --yes >&2
sleep 1
touch "$W/probe.stop"
wait "$PROBE"
# The outage: from the first failed read to the next good one (the longest such run);
# its resolution is the spacing of the reads, reported beside it.
read -r OUTAGE READS FAILED SPACING < <(python3 - "$W/probe.log" <<'PY'
import sys
rows = [(float(t), state) for t, state in (l.split() for l in open(sys.argv[1]))]
worst, since = 0.0, None
for t, state in rows:
    if state == "down" and since is None:
        since = t
    elif state == "ok" and since is not None:
        worst, since = max(worst, t - since), None
spacing = max((b[0] - a[0] for a, b in zip(rows, rows[1:])), default=0)
print(round(worst, 2), len(rows), sum(s == "down" for _, s in rows), round(spacing, 2))
PY
)

mb() { python3 -c "print(round($1 / 1048576, 1))"; }
ratio() { python3 -c "print(round($1 / $2, 2))"; }
cat <<EOF2

database: $(mb "$DB_BYTES") MiB on disk (pg_database_size), PostgreSQL $(psql -XAt -c 'SHOW server_version' | cut -d' ' -f1), $(nproc) cores

| backup                        | wall s | file MiB | vs seed time | vs seed size |
|-------------------------------|-------:|---------:|-------------:|-------------:|
| seed: pg_dump -Fp \| gzip      | ${T[seed_backup]} | $(mb "${S[seed_backup]}") | 1.00 | 1.00 |
| pg_dump -Fc (its own gzip)    | ${T[fc_backup]} | $(mb "${S[fc_backup]}") | $(ratio "${T[fc_backup]}" "${T[seed_backup]}") | $(ratio "${S[fc_backup]}" "${S[seed_backup]}") |
| berth backup (zstd -3, mt)    | ${T[berth_backup]} | $(mb "${S[berth_backup]}") | $(ratio "${T[berth_backup]}" "${T[seed_backup]}") | $(ratio "${S[berth_backup]}" "${S[seed_backup]}") |

| restore                                   | wall s | speed-up vs seed |
|-------------------------------------------|-------:|-----------------:|
| seed: gunzip \| psql                       | ${T[seed_restore]} | 1.00 |
| berth restore (pg_restore -j, verified, swapped) | ${T[berth_restore]} | $(ratio "${T[seed_restore]}" "${T[berth_restore]}") |
| reference: pg_restore -j 1 (no checks, no swap) | ${T[ref_j1]} | $(ratio "${T[seed_restore]}" "${T[ref_j1]}") |
| reference: pg_restore -j $(nproc) (no checks, no swap) | ${T[ref_jn]} | $(ratio "${T[seed_restore]}" "${T[ref_jn]}") |
| floor: the server CPU of pg_restore -j 1 ($(ratio "${C[ref_j1]}" 1) s) spread perfectly over $(nproc) cores | $(ratio "${C[ref_j1]}" "$(nproc)") | $(ratio "${T[seed_restore]}" "$(ratio "${C[ref_j1]}" "$(nproc)")") |

PostgreSQL's own CPU seconds (all backends, WAL writer, checkpointer) during each restore: seed ${C[seed_restore]},
pg_restore -j 1 ${C[ref_j1]}, -j $(nproc) ${C[ref_jn]}, berth restore ${C[berth_restore]}. The floor row is the
fastest any restore that makes this server load and index the same data could finish on $(nproc) cores, with no
client-side work at all: its speed-up is the most a logical restore can reach against the seed here.

| while restoring, the product cannot read its data for | s |
|--------------------------------------------------------|--:|
| seed (DROP DATABASE, then gunzip \| psql)              | ${T[seed_restore]} or more |
| berth restore: $FAILED of $READS reads failed (at most ${SPACING} s apart); longest failing run | $OUTAGE |
EOF2
