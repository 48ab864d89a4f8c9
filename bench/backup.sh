#!/usr/bin/env bash
# berth backup / restore vs the seed's `pg_dump | gzip` + `gunzip | psql` and vs
# `pg_dump -Fc` (pg_dump's own gzip), side by side on one generated database of
# at least SIZE_GB on a PostgreSQL cluster of its own; then the product, deployed
# on the local runtime behind nginx (demo-app, whose /api/db route reads the
# database), is restored once more while bench/restore_probe.py reads through it
# (HTTP, keep-alive) and from the database (one kept connection) every 20 ms.
# Usage: bench/backup.sh [SIZE_GB]   (default 1.2; builds berth in release mode; run as root)
# Prints its section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
ensure_postgres
ensure_rust
ensure_cmd nginx nginx
ensure_cmd zstd zstd
SIZE_GB=${1:-1.2}
INTERVAL=0.02
HEADER=$(bench_header "Backup and restore of a ${SIZE_GB} GB database (real PostgreSQL)" \
    "Goals: \`berth backup\` faster than both peers and smaller than \`pg_dump | gzip\`; \`berth restore\` at most 1.10x the wall time of a bare \`pg_restore -j <cores>\` of the same dump, run side by side (and its speed-up over the seed's \`gunzip | psql\` next to this machine's ceiling); while berth restores, the product's data is out for as short a time as possible (the seed's is out for the whole restore)." \
    bench/backup.sh "$@")
cargo build --release --locked -q -p berth
ROOT=$PWD
BERTH=$ROOT/target/release/berth
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

W=$(mktemp -d /tmp/berth-bench-backup.XXXXXX)
chmod 755 "$W"
mkdir "$W/pg" && chown postgres:postgres "$W/pg"
REPO=$W/repo
PROBE=
cleanup() {
    [ -z "$PROBE" ] || kill "$PROBE" 2>/dev/null || true
    if [ -f "$REPO/deploy/dev/nginx/nginx.conf" ]; then
        nginx -p "$REPO" -c deploy/dev/nginx/nginx.conf -s stop >/dev/null 2>&1 || true
    fi
    # Every demo-app the deploy and the restore started (each leads its own process group).
    for f in "$REPO"/.berth/run/*/*/*.json; do
        [ -f "$f" ] || continue
        pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$f")
        kill -9 -- "-$pid" 2>/dev/null || true
    done
    su postgres -c "$PGBIN/pg_ctl -D $W/pg/data -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$W"
}
trap cleanup EXIT
# A random port below the ephemeral range (32768+); never bound and released to test it:
# when the server cannot listen on it, another one is tried.
random_port() { echo $((20000 + RANDOM % 12000)); }
su postgres -c "$PGBIN/initdb -D $W/pg/data -U postgres --auth=trust" >/dev/null
# A server tuned like a small production box: WAL and checkpoints sized for bulk loads.
PORT=
for _ in $(seq 1 20); do
    p=$(random_port)
    if su postgres -c "$PGBIN/pg_ctl -D $W/pg/data -l $W/pg/log -w start -o '-p $p -k $W/pg -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min'" >/dev/null 2>&1; then
        PORT=$p
        break
    fi
done
[ -n "$PORT" ] || { tail -20 "$W/pg/log" >&2; die "PostgreSQL did not start on any of 20 ports"; }
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
SHAPE=$(psql -XAt -d shop -c "SELECT count(*) || ' tables, ' || round(sum(reltuples)) || ' rows (planner estimate), ' || (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public') || ' indexes' FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then DROPPED=yes; else DROPPED="no (not permitted here)"; fi

mkdir "$REPO"
cd "$REPO"
git init -q .
git config user.name bench
git config user.email bench@localhost
printf '.berth/\nbackups/\n' > .gitignore
# manifest HTTP_PORT HOST_PORT: the product, its database and (when HOST_PORT is
# set) one demo-app service behind nginx whose /api/db route reads the orders table.
manifest() {
    cat <<TOML
[project]
name = "bench"

[conventions]
require_task = false

[infra.postgres]
mode = "external"
admin_url_env = "BERTH_POSTGRES_ADMIN_URL"
app_host = "127.0.0.1"
app_port = $PORT

[proxy]
nginx_config = "deploy/dev/nginx/nginx.conf"
http_port = $1

[deploy]
runtime = "local"
slot_port_offset = 1
drain = "0s"

[products.shop]
paths = ["shop/**"]
domains = ["shop.test"]
database = { name = "shop", role = "shop_user" }
TOML
    [ -n "${2:-}" ] || return 0
    cat <<TOML

[products.shop.services.server]
command = "demo-app"
route = "/"
port = $2
host_port = $2
env = { PRODUCT_ID = "shop", DEMO_DB_QUERY = "SELECT 1 FROM orders LIMIT 1" }
health = { path = "/api/health", interval = "200ms", timeout = "1s", deadline = "60s" }
TOML
}
manifest "$(random_port)" > berth.toml
git add -A
git commit -qm "chore: the bench product"

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
declare -A T S C L
run() { # name, command...
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    psql -Xq -c CHECKPOINT
    L[$name]=$(cut -d' ' -f1 /proc/loadavg) # the 1-minute load average as it starts
    local a c; a=$(now); c=$(server_cpu)
    "$@" >&2
    T[$name]=$(python3 -c "print(round($(now) - $a, 2))")
    sleep 1 # let the postmaster reap the backends so their CPU time is counted
    C[$name]=$(python3 -c "print(round($(server_cpu) - $c, 2))")
}

log "pg_dump -Fp | gzip (the seed)"
run seed_backup sh -c "pg_dump -Fp shop | gzip > $W/seed.sql.gz"
S[seed_backup]=$(stat -c %s "$W/seed.sql.gz")
log "pg_dump -Fc (pg_dump's own gzip)"
run fc_backup pg_dump -Fc -f "$W/shop.dump" shop
S[fc_backup]=$(stat -c %s "$W/shop.dump")
log "berth backup shop"
run berth_backup "$BERTH" backup shop
S[berth_backup]=$(stat -c %s backups/shop/*.dump.zst)

log "gunzip | psql into a new database (the seed's restore, without its DROP)"
psql -Xq -c "CREATE DATABASE seed_restore OWNER shop_user"
run seed_restore sh -c "gunzip -c $W/seed.sql.gz | psql -Xq -v ON_ERROR_STOP=1 -d seed_restore >/dev/null"
log "pg_restore -j 1 and -j $(nproc) of the pg_dump -Fc archive (what parallelism buys here)"
psql -Xq -c "CREATE DATABASE ref1 OWNER shop_user" -c "CREATE DATABASE refn OWNER shop_user"
run ref_j1 pg_restore --no-owner -j 1 -d ref1 "$W/shop.dump"
run ref_jn pg_restore --no-owner -j "$(nproc)" -d refn "$W/shop.dump"
psql -Xq -c "DROP DATABASE ref1" -c "DROP DATABASE refn"
log "bare pg_restore -j $(nproc) of berth's own archive (decompressed beforehand, not timed)"
zstd -q -d -c backups/shop/*.dump.zst > "$W/berth.dump"
psql -Xq -c "CREATE DATABASE bare OWNER shop_user"
run bare_jn pg_restore --no-owner -j "$(nproc)" -d bare "$W/berth.dump"
psql -Xq -c "DROP DATABASE bare"
rm -f "$W/berth.dump"
log "berth restore shop (checksum, pg_restore -j $(nproc) into a new database, row counts, ANALYZE, swap)"
run berth_restore sh -c "BERTH_LOG=info '$BERTH' restore shop latest --yes > '$W/restore.out'"
cat "$W/restore.out" >&2
PHASES=$(sed -n 's/^time: //p' "$W/restore.out")

# How long the product cannot read its data: the seed drops the live database first,
# so for it that is the whole restore. For berth: deploy the product (a demo-app whose
# /api/db reads the orders table, behind nginx) and restore once more (not timed
# above) while bench/restore_probe.py reads through the product and from the database.
log "deploy the product behind nginx, then berth restore again under two readers every ${INTERVAL}s"
DEPLOYED=0
for _ in $(seq 1 5); do
    HTTP_PORT=$(random_port)
    manifest "$HTTP_PORT" "$(( $(random_port) / 2 * 2 ))" > berth.toml
    git add -A && git commit -qm "chore: the bench product's service behind nginx"
    "$BERTH" render --env dev >/dev/null 2>"$W/render.log" || { cat "$W/render.log" >&2; exit 1; }
    git add -A && { git diff --cached --quiet || git commit -qm "chore: rendered"; }
    if BERTH_OPERATOR=bench "$BERTH" deploy shop --yes >/dev/null 2>"$W/deploy.log"; then
        DEPLOYED=1
        break
    fi
    # A port taken by something else: stop what started and try other ports.
    nginx -p "$REPO" -c deploy/dev/nginx/nginx.conf -s stop >/dev/null 2>&1 || true
done
[ "$DEPLOYED" -eq 1 ] || { cat "$W/deploy.log" >&2; die "the bench product did not deploy"; }
DB_URL="postgresql://shop_user@127.0.0.1:$PORT/shop"
QUERY="SELECT 1 FROM orders LIMIT 1"
python3 "$ROOT/bench/restore_probe.py" "$HTTP_PORT" shop.test /api/db "$DB_URL" "$QUERY" "$INTERVAL" 1 \
    "$W/probe.ready" "$W/probe.stop" "$W/probe.json" &
PROBE=$!
# Both readers must have read once before the restore starts.
for _ in $(seq 1 600); do
    [ -e "$W/probe.ready" ] && break
    kill -0 "$PROBE" 2>/dev/null || die "the probe exited before its first good reads"
    sleep 0.05
done
[ -e "$W/probe.ready" ] || die "the probe had no good read through the product and the database within 30 s"
a=$(now)
BERTH_OPERATOR=bench "$BERTH" restore shop latest --yes >&2
T[probed_restore]=$(python3 -c "print(round($(now) - $a, 2))")
touch "$W/probe.stop"
wait "$PROBE"
PROBE=

mb() { python3 -c "print(round($1 / 1048576, 1))"; }
ratio() { python3 -c "print(round($1 / $2, 2))"; }
printf '%s\n\n' "$HEADER"
cat <<EOF2
database: $(mb "$DB_BYTES") MiB on disk (pg_database_size), PostgreSQL $(psql -XAt -c 'SHOW server_version' | cut -d' ' -f1), $(nproc) cores;
$SHAPE. Before each timed run: a CHECKPOINT, and the page cache dropped: $DROPPED.

| backup                        | wall s | file MiB | vs seed time | vs seed size |
|-------------------------------|-------:|---------:|-------------:|-------------:|
| seed: pg_dump -Fp \| gzip      | ${T[seed_backup]} | $(mb "${S[seed_backup]}") | 1.00 | 1.00 |
| pg_dump -Fc (its own gzip)    | ${T[fc_backup]} | $(mb "${S[fc_backup]}") | $(ratio "${T[fc_backup]}" "${T[seed_backup]}") | $(ratio "${S[fc_backup]}" "${S[seed_backup]}") |
| berth backup (zstd -3, mt)    | ${T[berth_backup]} | $(mb "${S[berth_backup]}") | $(ratio "${T[berth_backup]}" "${T[seed_backup]}") | $(ratio "${S[berth_backup]}" "${S[seed_backup]}") |

| restore                                   | wall s | speed-up vs seed |
|-------------------------------------------|-------:|-----------------:|
| seed: gunzip \| psql                       | ${T[seed_restore]} | 1.00 |
| berth restore (pg_restore -j, verified, swapped) | ${T[berth_restore]} | $(ratio "${T[seed_restore]}" "${T[berth_restore]}") |
| bare: pg_restore -j $(nproc) of berth's own archive, decompressed beforehand (no checks, no swap) | ${T[bare_jn]} | $(ratio "${T[seed_restore]}" "${T[bare_jn]}") |
| reference: pg_restore -j 1 (no checks, no swap) | ${T[ref_j1]} | $(ratio "${T[seed_restore]}" "${T[ref_j1]}") |
| reference: pg_restore -j $(nproc) (no checks, no swap) | ${T[ref_jn]} | $(ratio "${T[seed_restore]}" "${T[ref_jn]}") |
| floor: the server CPU of pg_restore -j 1 ($(ratio "${C[ref_j1]}" 1) s) spread perfectly over $(nproc) cores | $(ratio "${C[ref_j1]}" "$(nproc)") | $(ratio "${T[seed_restore]}" "$(ratio "${C[ref_j1]}" "$(nproc)")") |

PostgreSQL's own CPU seconds (all backends, WAL writer, checkpointer) during each restore: seed ${C[seed_restore]},
pg_restore -j 1 ${C[ref_j1]}, -j $(nproc) ${C[ref_jn]}, bare -j $(nproc) of berth's archive ${C[bare_jn]}, berth restore ${C[berth_restore]}.
Where berth restore's time went (its own phase times): ${PHASES:-not printed}.
The machine's 1-minute load average as each restore started (other work shares these $(nproc) cores): seed ${L[seed_restore]},
pg_restore -j 1 ${L[ref_j1]}, -j $(nproc) ${L[ref_jn]}, bare -j $(nproc) ${L[bare_jn]}, berth restore ${L[berth_restore]}. The floor row is the
fastest any restore that makes this server load and index the same data could finish on $(nproc) cores, with no
client-side work at all: its speed-up is the most a logical restore can reach against the seed here.

| while restoring, the product cannot read its data for | s |
|--------------------------------------------------------|--:|
| seed (DROP DATABASE, then gunzip \| psql)              | ${T[seed_restore]} or more |
| berth restore of the deployed product (wall ${T[probed_restore]} s): the longer outage of the two readers below | $(python3 -c "import json; r = json.load(open('$W/probe.json')); print(max(x['longest_outage_s'] for x in r.values()))") |

EOF2
python3 - "$W/probe.json" "$INTERVAL" "$QUERY" "${T[seed_backup]}" "${T[fc_backup]}" "${T[berth_backup]}" \
    "${S[seed_backup]}" "${S[berth_backup]}" "${T[seed_restore]}" "${T[berth_restore]}" "${C[ref_j1]}" "$(nproc)" \
    "${T[bare_jn]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
interval, query = float(sys.argv[2]), sys.argv[3]
t_seed, t_fc, t_berth, s_seed, s_berth, r_seed, r_berth, cpu_j1, cores, r_bare = map(float, sys.argv[4:14])
print(f"Readers during that restore, each reading every {interval * 1000:.0f} ms on a fixed schedule "
      "(a failed read: an error, or no answer within 1 s):")
print()
print("| reader | reads | failed | HTTP 503 + Retry-After (maintenance) | HTTP 502/504 | other failures | longest outage s | outage open at the end | stale keep-alive retries (not failures) |")
print("|---|---:|---:|---:|---:|---|---:|---|---:|")
names = {"http": "product: `GET /api/db` through nginx, one keep-alive connection",
         "db": f"database: one kept connection, `{query}`"}
for key in ("http", "db"):
    x = r[key]
    k = dict(x["kinds"])
    n503 = k.pop("503", 0)
    n502 = k.pop("502", 0) + k.pop("504", 0)
    other = ", ".join(f"{name} {n}" for name, n in sorted(k.items())) or "none"
    retries = x.get("stale_keepalive_retries", "n/a")
    print(f"| {names[key]} | {x['reads']} | {x['failed']} | {n503} | {n502} | {other} | {x['longest_outage_s']} | {'**yes**' if x['open_at_end'] else 'no'} | {retries} |")
print()
faster = t_berth < t_seed and t_berth < t_fc
smaller = s_berth < s_seed
print(f"Backup: {'**met**' if faster and smaller else '**not met**'}: berth takes {t_berth / t_seed:.2f} of the seed's time "
      f"and {t_berth / t_fc:.2f} of pg_dump -Fc's; its file is {s_berth / s_seed:.2f} of the seed's size.  ")
speedup = r_seed / r_berth
floor = r_seed / round(cpu_j1 / cores, 2)  # as in the floor row
over = r_berth / r_bare
print(f"Restore: {'**met**' if over <= 1.10 else '**not met**'}: berth restore takes {over:.2f}x the wall time of a bare "
      f"pg_restore -j {cores:.0f} of the same dump (goal at most 1.10x); {speedup:.2f}x the seed's speed, "
      f"where the floor row allows at most {floor:.2f}x on {cores:.0f} cores.  ")
worst = max(r.values(), key=lambda x: x["longest_outage_s"])
still = [k for k, x in r.items() if x["open_at_end"]]
print(f"Outage: berth's restore left the product unable to read for at most {worst['longest_outage_s']} s "
      f"(the seed: the whole restore, {r_seed} s or more)"
      + (f"; **still failing at the end** for: {', '.join(still)}." if still else "; every reader was reading again at the end."))
PY
