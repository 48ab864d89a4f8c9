#!/usr/bin/env python3
"""Readers of a product's data during a restore, for bench/backup.sh (std only).

Two readers, each on a fixed schedule (one read every INTERVAL seconds; a read that
takes longer moves the next one to the next tick):
  * http: GET PATH with Host HOST through nginx on 127.0.0.1:PORT over one kept-alive
    connection (a new one after any failure; a kept connection closed by the server
    while idle gets the request again once on a new one, counted as a stale keep-alive
    retry, as browsers do); PATH is a route of the product that
    reads its database. Failures by kind: 503 (nginx's maintenance answer, with
    Retry-After; one without it is counted apart), 502/504
    (nginx: the product is not there), 500 (the product answered: its read failed),
    reset, refused, timeout (no answer within 1 s), other.
  * db: QUERY on one kept PostgreSQL connection (simple query protocol, trust or
    cleartext password), reconnecting after any failure. Failures by kind: the
    SQLSTATE of the server's error (57P01: terminated by the restore; 3D000: no such
    database), reset, refused, timeout, other.
Runs until STOP_FILE exists, then reads for TAIL more seconds. Writes READY_FILE once
both readers have had a good read, and a JSON summary per reader to OUT: reads,
failed reads by kind, the longest outage (from the first failed read to the next good
one) and whether an outage was still open at the end (it then runs to the end).
Usage: restore_probe.py PORT HOST PATH DB_URL QUERY INTERVAL TAIL READY_FILE STOP_FILE OUT
"""
import http.client, json, os, socket, struct, sys, threading, time
from urllib.parse import urlparse

PORT, HOST, PATH, DB_URL, QUERY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
INTERVAL, TAIL = float(sys.argv[6]), float(sys.argv[7])
READY, STOP, OUT = sys.argv[8], sys.argv[9], sys.argv[10]
TIMEOUT = 1.0


class PgError(Exception):
    pass


class Pg:
    """One PostgreSQL connection: startup, then simple queries."""

    def __init__(self, url):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 5432), timeout=TIMEOUT)
        user, db = u.username or "postgres", (u.path or "/").lstrip("/") or (u.username or "postgres")
        body = struct.pack("!I", 196608) + b"".join(k + b"\0" + v.encode() + b"\0" for k, v in [(b"user", user), (b"database", db)]) + b"\0"
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            t, b = self.message()
            if t == b"R":
                code = struct.unpack("!I", b[:4])[0]
                if code == 3:
                    pw = (u.password or "").encode() + b"\0"
                    self.sock.sendall(b"p" + struct.pack("!I", len(pw) + 4) + pw)
                elif code != 0:
                    raise PgError(f"auth method {code} unsupported")
            elif t == b"E":
                raise PgError(self.error(b))
            elif t == b"Z":
                return

    def recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionResetError("closed by the server")
            data += chunk
        return data

    def message(self):
        t, n = struct.unpack("!cI", self.recv(5))
        return t, self.recv(n - 4)

    @staticmethod
    def error(body):
        fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
        return fields.get(b"C", "?")

    def query(self, sql):
        q = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
        err = None
        while True:
            try:
                t, b = self.message()
            except ConnectionResetError:
                if err:  # the server said why before it closed (57P01: terminated)
                    raise PgError(err) from None
                raise
            if t == b"E":
                err = self.error(b)
                if err.startswith("57P"):
                    raise PgError(err)
            elif t == b"Z":
                if err:
                    raise PgError(err)
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def kind_of(e):
    if isinstance(e, PgError):
        return str(e)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead)):
        return "reset"
    return "other: " + type(e).__name__


def http_reader():
    conn = [None]

    def attempt():
        if conn[0] is None:
            conn[0] = http.client.HTTPConnection("127.0.0.1", PORT, timeout=TIMEOUT)
        conn[0].request("GET", PATH, headers={"Host": HOST})
        r = conn[0].getresponse()
        r.read()
        return r

    def read():
        kind = None
        try:
            reused = conn[0] is not None
            try:
                r = attempt()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                if not reused:
                    raise
                # A kept connection the server closed while idle (nginx does that to the
                # connections of the workers a reload retires): the request was never
                # read, so send it again once on a new connection, as browsers and HTTP
                # client libraries do. Counted apart, never hidden.
                stale_retries[0] += 1
                conn[0].close()
                conn[0] = None
                r = attempt()
            if r.status == 200:
                if r.getheader("Connection", "").lower() == "close":
                    conn[0].close()
                    conn[0] = None
                return None
            kind = {503: "503", 502: "502", 504: "504", 500: "500"}.get(r.status, f"HTTP {r.status}")
            if r.status == 503 and r.getheader("Retry-After") is None:
                kind = "503 without Retry-After"
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            kind = kind_of(e)
        if conn[0] is not None:
            conn[0].close()
            conn[0] = None
        return kind

    return read


def db_reader():
    conn = [None]

    def read():
        try:
            if conn[0] is None:
                conn[0] = Pg(DB_URL)
            conn[0].query(QUERY)
            return None
        except Exception as e:  # noqa: BLE001
            if conn[0] is not None:
                conn[0].close()
                conn[0] = None
            return kind_of(e)

    return read


results, ok_once = {}, {}
stale_retries = [0]
stop_at = [None]
lock = threading.Lock()


def run(name, read):
    rows = []  # (start, failure kind or None)
    t0 = time.monotonic()
    k = 0
    while True:
        now = time.monotonic()
        if stop_at[0] is not None and now >= stop_at[0]:
            break
        start = now
        kind = read()
        rows.append((start, kind))
        if kind is None and name not in ok_once:
            with lock:
                ok_once[name] = True
        k = int((time.monotonic() - t0) / INTERVAL) + 1
        delay = t0 + k * INTERVAL - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    end = time.monotonic()
    kinds, longest, since, open_at_end = {}, 0.0, None, False
    for start, kind in rows:
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
            if since is None:
                since = start
        elif since is not None:
            longest, since = max(longest, start - since), None
    if since is not None:
        longest, open_at_end = max(longest, end - since), True
    gaps = [b[0] - a[0] for a, b in zip(rows, rows[1:])]
    results[name] = {
        "reads": len(rows),
        "failed": sum(kinds.values()),
        "kinds": kinds,
        "longest_outage_s": round(longest, 3),
        "open_at_end": open_at_end,
        "max_gap_s": round(max(gaps, default=0), 3),
    }
    if name == "http":
        results[name]["stale_keepalive_retries"] = stale_retries[0]


threads = [threading.Thread(target=run, args=(n, r())) for n, r in [("http", http_reader), ("db", db_reader)]]
for t in threads:
    t.start()
ready_written = False
while True:
    if not ready_written and len(ok_once) == 2:
        open(READY, "w").close()
        ready_written = True
    if os.path.exists(STOP):
        stop_at[0] = time.monotonic() + TAIL
        break
    if not any(t.is_alive() for t in threads):
        break
    time.sleep(INTERVAL)
for t in threads:
    t.join()
with open(OUT, "w") as f:
    json.dump(results, f)
