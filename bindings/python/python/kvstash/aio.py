"""kvstash for asyncio: the same store, with coroutines.

    import kvstash.aio
    store = await kvstash.aio.open({"type": "file", "path": "devices.redb"})
    devices = store.bucket("devices")
    await devices.set("sensor-1", {"name": "backyard shed sensor"})
    entry = await devices.get("sensor-1")          # entry.value, entry.version
    async for event in devices.watch(since=0):
        ...

No call blocks the event loop: each runs on a worker thread, with the GIL
released while the store works (fsync waits included). Cancelling a
pending call is safe: the call still completes or fails as a whole (a
write may or may not have taken effect, as with any database client), and
the store is unaffected. A cancelled `watch` step loses no event.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from . import _native

# Calls wait on the store, not on the CPU: more threads than cores.
_EXECUTOR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="kvstash")


async def _run(fn, *args, **kwargs):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, lambda: fn(*args, **kwargs))


async def open(config) -> "Store":
    """Opens a store (see `kvstash.open`) without blocking the loop."""
    return Store(await _run(_native.open, config))


class Store:
    """An open store whose methods are coroutines."""

    def __init__(self, store: "_native.Store"):
        self._store = store

    @property
    def sync(self) -> "_native.Store":
        """The same store with the synchronous API."""
        return self._store

    def bucket(self, name: str) -> "Bucket":
        return Bucket(self._store.bucket(name))

    async def buckets(self) -> list:
        return await _run(self._store.buckets)

    def transaction(self) -> "Transaction":
        """A transaction: chain checks and writes, then `await tx.commit()`."""
        return Transaction(self._store.transaction())

    def lock(self, name: str, ttl: float, **options) -> "_Locking":
        """`lease = await store.lock(...)`, or `async with store.lock(...) as lease:`
        (released on exit). Waiting for the lock (`wait=`) is off the loop."""
        return _Locking(self._store, name, ttl, options)

    async def lock_status(self, name: str):
        return await _run(self._store.lock_status, name)

    async def sweep(self, limit: int = 1000) -> int:
        return await _run(self._store.sweep, limit)


class Transaction:
    """`kvstash.Transaction` whose `commit` is a coroutine. Adding checks and
    writes does no I/O, so those methods are plain calls that chain."""

    def __init__(self, tx: "_native.Transaction"):
        self._tx = tx

    def __getattr__(self, name):
        method = getattr(self._tx, name)

        def add(*args, **kwargs):
            if name == "check_lease" and isinstance(args[0], Lease):
                args = (args[0].sync,) + args[1:]
            method(*args, **kwargs)
            return self

        return add

    async def commit(self) -> int:
        return await _run(self._tx.commit)


class Lease:
    """A held lock (see `kvstash.Lease`) with coroutine `renew`/`release`."""

    def __init__(self, lease: "_native.Lease"):
        self._lease = lease

    @property
    def sync(self) -> "_native.Lease":
        return self._lease

    name = property(lambda self: self._lease.name)
    token = property(lambda self: self._lease.token)
    expires_at = property(lambda self: self._lease.expires_at)

    async def renew(self, ttl: float) -> None:
        await _run(self._lease.renew, ttl)

    async def release(self) -> bool:
        return await _run(self._lease.release)

    async def __aenter__(self) -> "Lease":
        return self

    async def __aexit__(self, *exc) -> bool:
        await self.release()
        return False


class _Locking:
    """What `Store.lock` returns: await it, or use it with `async with`."""

    def __init__(self, store, name, ttl, options):
        self._call = (store, name, ttl, options)
        self._lease = None

    async def _acquire(self) -> Lease:
        store, name, ttl, options = self._call
        return Lease(await _run(store.lock, name, ttl, **options))

    def __await__(self):
        return self._acquire().__await__()

    async def __aenter__(self) -> Lease:
        self._lease = await self._acquire()
        return self._lease

    async def __aexit__(self, *exc) -> bool:
        await self._lease.release()
        return False


class Bucket:
    """A bucket whose methods are coroutines; see `kvstash.Bucket`."""

    def __init__(self, bucket: "_native.Bucket"):
        self._bucket = bucket

    @property
    def name(self) -> str:
        return self._bucket.name

    async def get(self, key: str) -> Optional["_native.Entry"]:
        return await _run(self._bucket.get, key)

    async def set(self, key: str, value: Any, **options) -> int:
        return await _run(self._bucket.set, key, value, **options)

    async def delete(self, key: str) -> bool:
        return await _run(self._bucket.delete, key)

    async def increment(self, key: str, delta: int = 1) -> int:
        return await _run(self._bucket.increment, key, delta)

    async def list(self, **options):
        return await _run(self._bucket.list, **options)

    async def exists(self, key: str) -> bool:
        return await _run(self._bucket.exists, key)

    async def get_path(self, key: str, path: str) -> Optional["_native.Entry"]:
        return await _run(self._bucket.get_path, key, path)

    async def set_path(self, key: str, path: str, value: Any) -> int:
        return await _run(self._bucket.set_path, key, path, value)

    async def delete_path(self, key: str, path: str) -> int:
        return await _run(self._bucket.delete_path, key, path)

    async def append_path(self, key: str, path: str, value: Any) -> int:
        return await _run(self._bucket.append_path, key, path, value)

    async def set_schema(self, schema, *, force: bool = False) -> int:
        return await _run(self._bucket.set_schema, schema, force=force)

    async def schema(self):
        return await _run(self._bucket.schema)

    async def set_history(self, keep: int) -> None:
        await _run(self._bucket.set_history, keep)

    async def undo(self) -> int:
        return await _run(self._bucket.undo)

    async def redo(self) -> int:
        return await _run(self._bucket.redo)

    async def history(self) -> tuple:
        return await _run(self._bucket.history)

    def watch(self, *, since: Optional[int] = None, prefix: Optional[str] = None) -> "Watch":
        """The bucket's changes as an async iterator of `kvstash.Event`."""
        return Watch(self._bucket, since, prefix)


class Watch:
    """`async for event in bucket.watch(...)`."""

    def __init__(self, bucket, since, prefix):
        self._bucket = bucket
        self._options = {"since": since, "prefix": prefix}
        self._watch = None
        self._pending = None

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._watch is None:
            self._watch = await _run(self._bucket.watch, **self._options)
        while True:
            # One step at a time, shielded: if the awaiting task is
            # cancelled, the step finishes and its event waits for the
            # next `__anext__` instead of being lost.
            if self._pending is None:
                loop = asyncio.get_running_loop()
                self._pending = loop.run_in_executor(_EXECUTOR, self._watch.next_event, 0.25)
            event = await asyncio.shield(self._pending)
            self._pending = None
            if event is not None:
                return event
