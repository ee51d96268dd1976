"""Python-side throughput of kvstash against TinyDB (+ aiotinydb) and sqlite3.

Usage:
    python_bench.py --dir SCRATCH_DIR --n 10000 --gets 50000 --puts 2000 [--only SUBJECT,...]

Subjects: kvstash-file, kvstash-memory, kvstash-aio-file, tinydb-aiotinydb,
tinydb, sqlite3. Each runs the same workload on a fresh file in SCRATCH_DIR,
with the conventions of bench/peers/peer.py (keys, values, xorshift picks):

  1. load N keys `sensor_{i:06d}` (bulk where the subject has it; not timed);
  2. time GETS gets of random keys, each checked against the value loaded;
  3. time PUTS overwrites of random keys with values they never had, each its
     own acknowledged write (a commit, for the durable subjects an fsync).

TinyDB reads (and on a write, rewrites) its whole JSON file on every
operation, so its op counts are capped (TINYDB_GETS, TINYDB_PUTS, chosen for
N = 10000) to keep a subject under 20 s; the note says so.

stdout gets one JSON object per subject and nothing else:
    {"subject": str, "get_per_s": float|null, "put_per_s": float|null,
     "durable": bool, "note": str}
Progress goes to stderr. A subject whose optional package (tinydb, aiotinydb)
is missing prints nulls with the note "not installed". A subject that fails
prints nulls with the note "failed: ..."; the others still run, and the
script then exits 1.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import sqlite3
import sys
import time

# The workload's keys, values and picks: the same as the peers' driver's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
from peer import key, random_indices, value  # noqa: E402

SUBJECTS = ["kvstash-file", "kvstash-memory", "kvstash-aio-file", "tinydb-aiotinydb", "tinydb", "sqlite3"]

# Whether an acknowledged put has been fsynced.
DURABLE = {
    "kvstash-file": True,
    "kvstash-memory": False,
    "kvstash-aio-file": True,
    "tinydb-aiotinydb": False,
    "tinydb": False,
    "sqlite3": True,
}

# Python packages a subject needs beyond the standard library and kvstash.
OPTIONAL_PACKAGES = {
    "tinydb-aiotinydb": ["tinydb", "aiotinydb"],
    "tinydb": ["tinydb"],
}

TINYDB_GETS = 200
TINYDB_PUTS = 100

GET_SEED = 0x9E3779B97F4A7C15
PUT_SEED = 0x2545F4914F6CDD1D


def log(message):
    print(message, file=sys.stderr, flush=True)


class Workload:
    """What to load, which keys to get and which to overwrite, with what."""

    def __init__(self, n, gets, puts):
        self.n = n
        self.get_picks = random_indices(n, gets, GET_SEED)
        # (key index, value index): values the keys never had, as in peer.py.
        self.put_picks = [(i, i + n + j) for j, i in enumerate(random_indices(n, puts, PUT_SEED))]

    def items(self):
        return [(key(i), value(i)) for i in range(self.n)]


def check(got, i):
    if got != value(i):
        raise LookupError(f"get {key(i)} returned {got!r}, expected {value(i)!r}")


def rate(count, seconds):
    return count / max(seconds, 1e-9)


def fresh_path(directory, name):
    path = os.path.join(directory, name)
    if os.path.exists(path):
        os.remove(path)
    return path


def run_sync(db, work):
    """Times gets then puts on `db` (an object with get(k) and put(k, v))."""
    started = time.perf_counter()
    for i in work.get_picks:
        check(db.get(key(i)), i)
    get_per_s = rate(len(work.get_picks), time.perf_counter() - started)

    started = time.perf_counter()
    for i, v in work.put_picks:
        db.put(key(i), value(v))
    put_per_s = rate(len(work.put_picks), time.perf_counter() - started)
    return get_per_s, put_per_s


async def run_async(db, work):
    """run_sync for an object whose get and put are coroutines."""
    started = time.perf_counter()
    for i in work.get_picks:
        check(await db.get(key(i)), i)
    get_per_s = rate(len(work.get_picks), time.perf_counter() - started)

    started = time.perf_counter()
    for i, v in work.put_picks:
        await db.put(key(i), value(v))
    put_per_s = rate(len(work.put_picks), time.perf_counter() - started)
    return get_per_s, put_per_s


class KvstashKV:
    def __init__(self, config):
        import kvstash

        self.bucket = kvstash.open(config).bucket("bench")

    def load(self, items):
        # The Python binding has no bulk write yet: one set per key.
        for k, v in items:
            self.bucket.set(k, v)

    def get(self, k):
        entry = self.bucket.get(k)
        return None if entry is None else entry.value

    def put(self, k, v):
        self.bucket.set(k, v)


class KvstashAioKV:
    def __init__(self, bucket):
        self.bucket = bucket

    async def load(self, items):
        for k, v in items:
            await self.bucket.set(k, v)

    async def get(self, k):
        entry = await self.bucket.get(k)
        return None if entry is None else entry.value

    async def put(self, k, v):
        await self.bucket.set(k, v)


class TinyKV:
    """TinyDB (or an open AIOTinyDB) as a key/value store: one {"k", "v"} per key."""

    def __init__(self, db):
        from tinydb import Query

        self.db = db
        self.q = Query()

    def load(self, items):
        self.db.insert_multiple({"k": k, "v": v} for k, v in items)

    def get(self, k):
        doc = self.db.get(self.q.k == k)
        return None if doc is None else doc["v"]

    def put(self, k, v):
        self.db.upsert({"k": k, "v": v}, self.q.k == k)


class SqliteKV:
    def __init__(self, path):
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        self.conn.commit()

    def load(self, items):
        self.conn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", ((k, json.dumps(v)) for k, v in items))
        self.conn.commit()

    def get(self, k):
        row = self.conn.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, k, v):
        self.conn.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, json.dumps(v)))
        self.conn.commit()

    def close(self):
        self.conn.close()


def bench_kvstash_file(directory, work):
    db = KvstashKV({"type": "file", "path": fresh_path(directory, "kvstash-file.redb")})
    db.load(work.items())
    return run_sync(db, work) + ("fsync per put; loaded with one set per key",)


def bench_kvstash_memory(directory, work):
    db = KvstashKV({"type": "memory"})
    db.load(work.items())
    return run_sync(db, work) + ("in memory",)


def bench_kvstash_aio_file(directory, work):
    async def main():
        import kvstash.aio

        store = await kvstash.aio.open({"type": "file", "path": fresh_path(directory, "kvstash-aio-file.redb")})
        db = KvstashAioKV(store.bucket("bench"))
        await db.load(work.items())
        return await run_async(db, work)

    return asyncio.run(main()) + ("fsync per put; sequential awaits in one event loop",)


def tinydb_note(work):
    return f"capped: {len(work.get_picks)} gets, {len(work.put_picks)} puts; TinyDB never fsyncs"


def bench_tinydb_aiotinydb(directory, work):
    from aiotinydb import AIOTinyDB

    async def main():
        async with AIOTinyDB(fresh_path(directory, "tinydb-aiotinydb.json")) as db:
            kv = TinyKV(db)
            kv.load(work.items())
            return run_sync(kv, work)

    note = tinydb_note(work) + "; inside one `async with` puts go to an in-memory copy, the file is written on exit"
    return asyncio.run(main()) + (note,)


def bench_tinydb(directory, work):
    from tinydb import TinyDB

    db = TinyDB(fresh_path(directory, "tinydb.json"))
    try:
        kv = TinyKV(db)
        kv.load(work.items())
        result = run_sync(kv, work)
    finally:
        db.close()
    return result + (tinydb_note(work) + "; each op reads the whole file, each put rewrites it",)


def bench_sqlite3(directory, work):
    db = SqliteKV(fresh_path(directory, "sqlite3.db"))
    try:
        db.load(work.items())
        result = run_sync(db, work)
    finally:
        db.close()
    return result + (f"sqlite {sqlite3.sqlite_version}, WAL, synchronous=FULL, commit per put",)


BENCHES = {
    "kvstash-file": bench_kvstash_file,
    "kvstash-memory": bench_kvstash_memory,
    "kvstash-aio-file": bench_kvstash_aio_file,
    "tinydb-aiotinydb": bench_tinydb_aiotinydb,
    "tinydb": bench_tinydb,
    "sqlite3": bench_sqlite3,
}


def missing_packages(subject):
    return [p for p in OPTIONAL_PACKAGES.get(subject, []) if importlib.util.find_spec(p) is None]


def op_counts(subject, gets, puts):
    if subject.startswith("tinydb"):
        return min(gets, TINYDB_GETS), min(puts, TINYDB_PUTS)
    return gets, puts


def run_subject(subject, args):
    """Runs one subject; returns its output line (a dict) and whether it failed."""
    line = {"subject": subject, "get_per_s": None, "put_per_s": None, "durable": DURABLE[subject], "note": ""}
    missing = missing_packages(subject)
    if missing:
        line["note"] = "not installed: " + ", ".join(missing)
        return line, False
    gets, puts = op_counts(subject, args.gets, args.puts)
    work = Workload(args.n, gets, puts)
    started = time.perf_counter()
    try:
        line["get_per_s"], line["put_per_s"], line["note"] = BENCHES[subject](args.dir, work)
    except Exception as e:  # noqa: BLE001 - any failure of the subject is reported
        line["note"] = f"failed: {type(e).__name__}: {e}"
        return line, True
    finally:
        log(f"{subject}: {time.perf_counter() - started:.1f} s")
    return line, False


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="scratch directory for the subjects' files")
    parser.add_argument("--n", type=int, default=10000, help="keys loaded before timing")
    parser.add_argument("--gets", type=int, default=50000, help="random gets timed")
    parser.add_argument("--puts", type=int, default=2000, help="random overwrites timed")
    parser.add_argument("--only", help="comma-separated subjects (default: all): " + ",".join(SUBJECTS))
    args = parser.parse_args(argv)
    args.subjects = SUBJECTS if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.subjects if s not in DURABLE]
    if unknown:
        parser.error(f"unknown subject(s) {', '.join(unknown)}; known: {', '.join(SUBJECTS)}")
    if args.n < 1 or args.gets < 1 or args.puts < 1:
        parser.error("--n, --gets and --puts must be at least 1")
    return args


def main(argv):
    args = parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    failed = []
    for subject in args.subjects:
        log(f"{subject}: n={args.n} ...")
        line, subject_failed = run_subject(subject, args)
        print(json.dumps(line), flush=True)
        if subject_failed:
            log(f"{subject} {line['note']}")
            failed.append(subject)
    if failed:
        log(f"python_bench: {len(failed)} subject(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
