"""kvstash: a key/value and JSON-document store.

    import kvstash
    store = kvstash.open({"type": "file", "path": "/var/lib/app/kvstash.redb"})
    aliases = store.bucket("aliases")
    aliases.set("environment_sensor_1", [1, 5, 42])
    entry = aliases.get("environment_sensor_1")   # entry.value, entry.version

Values are JSON (anything `json.dumps` takes) or `bytes`. Every call
releases the GIL while the store works.
"""

from ._native import (
    Bucket,
    CompactedError,
    ConflictError,
    ContentionError,
    CorruptError,
    Entry,
    Event,
    InvalidError,
    KvstashError,
    Lease,
    LeaseLostError,
    LockHolder,
    LockedError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    Store,
    Transaction,
    Watch,
    open,
)

__all__ = [
    "Bucket",
    "CompactedError",
    "ConflictError",
    "ContentionError",
    "CorruptError",
    "Entry",
    "Event",
    "InvalidError",
    "KvstashError",
    "Lease",
    "LeaseLostError",
    "LockHolder",
    "LockedError",
    "NotFoundError",
    "ReadOnlyError",
    "StorageError",
    "Store",
    "Transaction",
    "Watch",
    "open",
]
