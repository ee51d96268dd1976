"""The seeds' Python peers under kvstash's benchmark workload.

Usage: peer.py SUBJECT N DIR DURABLE_WRITES OPS PAGES
SUBJECT: tinydb | tinydb-cached | jk-keyvaluestore. Prints one JSON line with
the same fields as kvstash::bench::Measured (rates in ops/s; null: the system
cannot do it). Same keys, values and operations as the Rust subjects: load N
keys in batches, then puts of new keys, random gets, overwrites, 100-key pages,
4-key "transactions" (null: neither peer has them), reopen, disk size, peak RSS.
"""

import json
import os
import resource
import sys
import time


def key(i):
    return f"sensor_{i:06d}"


def value(i):
    return {"alias": [1, 5, i % 256], "name": "backyard shed sensor", "n": i}


def random_indices(n, count, seed):
    # The same xorshift as kvstash::bench::random_indices.
    state, n, out, mask = seed | 1, max(n, 1), [], (1 << 64) - 1
    for _ in range(count):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out.append(state % n)
    return out


def disk_usage(path):
    if os.path.isdir(path):
        return sum(disk_usage(os.path.join(path, e)) for e in os.listdir(path))
    return os.path.getsize(path) if os.path.exists(path) else 0


class TinyKV:
    """TinyDB as a key/value store: one document {"k", "v"} per key."""

    def __init__(self, path, cached):
        self.path, self.cached = path, cached
        self.open()

    def open(self):
        from tinydb import Query, TinyDB
        from tinydb.storages import JSONStorage

        if self.cached:
            from tinydb.middlewares import CachingMiddleware

            self.db = TinyDB(self.path, storage=CachingMiddleware(JSONStorage))
        else:
            self.db = TinyDB(self.path)
        self.q = Query()

    def load(self, items):
        self.db.insert_multiple({"k": k, "v": v} for k, v in items)

    def put(self, k, v):
        self.db.upsert({"k": k, "v": v}, self.q.k == k)

    def get(self, k):
        return self.db.get(self.q.k == k) is not None

    def list(self, start, limit):
        docs = sorted((d for d in self.db.search(self.q.k >= start)), key=lambda d: d["k"])
        return len(docs[:limit])

    def reopen(self):
        self.db.close()  # CachingMiddleware flushes here
        started = time.perf_counter()
        self.open()
        self.db.get(self.q.k == "")  # TinyDB reads the file lazily
        return time.perf_counter() - started

    def disk(self):
        return disk_usage(self.path)


class JkKV:
    """jk_keyvaluestore: one JSON file per write in a directory."""

    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.open()

    def open(self):
        from jk_keyvaluestore import DirBasedKeyValueStore

        self.db = DirBasedKeyValueStore(dirPath=self.path, identifier=1)

    def load(self, items):
        for k, v in items:
            self.db.put(k, v)

    def put(self, k, v):
        self.db.put(k, v)

    def get(self, k):
        return self.db.get(k) is not None

    def list(self, start, limit):
        return len([k for k in self.db.keys() if k >= start][:limit])

    def reopen(self):
        started = time.perf_counter()
        self.open()
        return time.perf_counter() - started

    def disk(self):
        return disk_usage(self.path)


def measure(db, n, durable_writes, ops, pages):
    out = {}
    started = time.perf_counter()
    for base in range(0, n, 1000):
        db.load([(key(i), value(i)) for i in range(base, min(n, base + 1000))])
    out["load_s"] = time.perf_counter() - started

    notes = []

    def timed(name, count, op):
        # A peer's failing operation is reported, not hidden: null + a note.
        started = time.perf_counter()
        try:
            op()
        except Exception as e:  # noqa: BLE001 - any failure of the peer
            notes.append(f"{name} failed: {type(e).__name__}: {e}")
            out[name] = None
            return
        out[name] = count / max(time.perf_counter() - started, 1e-9)

    def puts():
        for i in range(n, n + durable_writes):
            db.put(key(i), value(i))

    timed("put", durable_writes, puts)
    picks = random_indices(n, ops, 0x9E3779B97F4A7C15)

    def gets():
        for i in picks:
            if not db.get(key(i)):
                raise LookupError(f"{key(i)} is missing")

    timed("get", len(picks), gets)
    writes = random_indices(n, durable_writes, 0x2545F4914F6CDD1D)
    # Values the keys never had, as in the Rust workload.
    timed("overwrite", len(writes), lambda: [db.put(key(i), value(i + n + j)) for j, i in enumerate(writes)])
    starts = random_indices(n, pages, 0x5851F42D4C957F2D)
    timed("list", len(starts), lambda: [db.list(key(i), 100) for i in starts])
    out["txn"] = None
    out["open_ms"] = db.reopen() * 1e3
    out["disk_bytes"] = db.disk()
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["notes"] = notes + ["txn: no transactions"]
    return out


def main():
    subject, n, directory, durable_writes, ops, pages = sys.argv[1:7]
    n, durable_writes, ops, pages = int(n), int(durable_writes), int(ops), int(pages)
    os.makedirs(directory, exist_ok=True)
    if subject == "tinydb":
        db = TinyKV(os.path.join(directory, "db.json"), cached=False)
    elif subject == "tinydb-cached":
        db = TinyKV(os.path.join(directory, "db.json"), cached=True)
    elif subject == "jk-keyvaluestore":
        db = JkKV(os.path.join(directory, "store"))
    else:
        raise SystemExit(f"unknown subject {subject}")
    print(json.dumps(measure(db, n, durable_writes, ops, pages)))


if __name__ == "__main__":
    main()
