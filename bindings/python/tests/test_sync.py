"""The synchronous API, on the file and memory backends."""

import subprocess
import sys
import threading

import pytest

import kvstash

from readme import readme_python_blocks


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    if request.param == "memory":
        return kvstash.open({"type": "memory"})
    return kvstash.open({"type": "file", "path": str(tmp_path / "s.redb")})


def test_aliases_and_display_names(tmp_path):
    # The seed's device connector: aliases and display names survive a reopen.
    path = str(tmp_path / "devices.redb")
    store = kvstash.open({"type": "file", "path": path})
    store.bucket("aliases").set("environment_sensor_1", [1, 5, 42])
    store.bucket("names").set("environment_sensor_1", "backyard shed sensor")
    del store
    again = kvstash.open(f'{{"type": "file", "path": "{path}"}}')
    assert again.bucket("aliases").get("environment_sensor_1").value == [1, 5, 42]
    assert again.bucket("names").get("environment_sensor_1").value == "backyard shed sensor"


def test_another_process_uses_a_held_store(tmp_path):
    # While this process holds the file store, another one (a second Python
    # process here) reads and writes it through the holder: no "in use".
    path = str(tmp_path / "held.redb")
    store = kvstash.open({"type": "file", "path": path})
    names = store.bucket("names")
    names.set("sensor-1", "backyard shed sensor")
    watch = names.watch(since=0)
    assert watch.next_event(5).key == "sensor-1"
    child = f"""
import kvstash
store = kvstash.open({{"type": "file", "path": {path!r}}})
names = store.bucket("names")
assert names.get("sensor-1").value == "backyard shed sensor"
names.set("sensor-2", "front door")
try:
    names.set("sensor-1", "overwritten", if_absent=True)
    raise SystemExit("if_absent overwrote a key")
except kvstash.ConflictError:
    pass
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert names.get("sensor-2").value == "front door"
    assert names.get("sensor-1").value == "backyard shed sensor"
    event = watch.next_event(5)
    assert (event.key, event.value) == ("sensor-2", "front door")


def test_values_and_versions(store):
    b = store.bucket("b")
    assert b.get("missing") is None
    v1 = b.set("doc", {"name": "shed", "tags": ["a", "b"], "n": 1.5, "none": None})
    entry = b.get("doc")
    assert entry.value == {"name": "shed", "tags": ["a", "b"], "n": 1.5, "none": None}
    assert entry.version == v1
    v2 = b.set("raw", b"\x00\xffbytes")
    assert v2 > v1
    assert b.get("raw").value == b"\x00\xffbytes"
    assert b.delete("raw") is True
    assert b.delete("raw") is False
    assert b.name == "b"


def test_conditional_writes(store):
    b = store.bucket("b")
    v = b.set("k", 1, if_absent=True)
    with pytest.raises(kvstash.ConflictError) as raised:
        b.set("k", 2, if_absent=True)
    assert raised.value.current == v
    with pytest.raises(kvstash.ConflictError) as raised:
        b.set("k", 2, if_version=v + 1000)
    assert raised.value.current == v
    assert isinstance(raised.value, kvstash.KvstashError)
    b.set("k", 3, if_version=v)
    assert b.get("k").value == 3


def test_increment_and_ttl(store):
    b = store.bucket("b")
    assert b.increment("hits") == 1
    assert b.increment("hits", 41) == 42
    b.set("lock", "me", ttl=30)
    assert b.get("lock").expires_at is not None
    with pytest.raises(kvstash.InvalidError):
        b.set("lock", "me", ttl=-1)


def test_list_pages(store):
    b = store.bucket("b")
    for i in range(25):
        b.set(f"sensor_{i:03}", i)
    seen, cursor = [], None
    while True:
        items, cursor = b.list(prefix="sensor_", limit=10, cursor=cursor)
        seen += [(k, e.value) for k, e in items]
        if cursor is None:
            break
    assert seen == [(f"sensor_{i:03}", i) for i in range(25)]


def test_bad_input_is_typed_and_harmless(store):
    b = store.bucket("b")
    b.set("k", 1)
    with pytest.raises(kvstash.InvalidError):
        b.set("", 1)
    with pytest.raises(kvstash.InvalidError):
        store.bucket("").get("k")
    with pytest.raises(TypeError):
        b.set("k", object())
    # A str that is not UTF-8 (a lone surrogate) is refused by Python's
    # own conversion, before the store sees it.
    with pytest.raises(UnicodeEncodeError):
        b.set("\udcff", 1)
    with pytest.raises(kvstash.InvalidError, match="cursor"):
        b.list(cursor="garbage")
    # A key that looks like a path is a key.
    b.set("../../etc/passwd", 2)
    assert b.get("../../etc/passwd").value == 2
    assert b.get("k").value == 1
    with pytest.raises(kvstash.InvalidError):
        kvstash.open({"type": "nope"})
    with pytest.raises(kvstash.InvalidError):
        kvstash.open(42)


def test_configured_limits_are_invalid_errors():
    store = kvstash.open(
        {"type": "memory", "limits": {"key_bytes": 8, "value_bytes": 64, "depth": 3}}
    )
    b = store.bucket("b")
    b.set("k", [1])
    for key, value, names in [
        ("123456789", 1, "limits.key_bytes"),
        ("k", "x" * 100, "limits.value_bytes"),
        ("k", [[[[1]]]], "limits.depth"),
    ]:
        with pytest.raises(kvstash.InvalidError, match=names):
            b.set(key, value)
    assert b.get("k").value == [1]
    with pytest.raises(kvstash.InvalidError, match="limits.depth"):
        kvstash.open({"type": "memory", "limits": {"depth": 500}}).bucket("b").get("k")


def test_threads_share_a_store(store):
    # Calls release the GIL; increments from several threads all count.
    b = store.bucket("b")

    def work():
        for _ in range(50):
            b.increment("n")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.get("n").value == 200


def test_every_error_is_a_kvstash_error():
    for name in [
        "InvalidError", "ConflictError", "NotFoundError", "ContentionError", "ReadOnlyError",
        "CompactedError", "StorageError", "CorruptError", "LockedError", "LeaseLostError",
    ]:
        assert issubclass(getattr(kvstash, name), kvstash.KvstashError), name
    assert issubclass(kvstash.CorruptError, kvstash.StorageError)
    assert issubclass(kvstash.KvstashError, Exception)


def test_a_damaged_file_is_a_corrupt_error(tmp_path):
    # Four bytes flipped in the header of the redb page holding a record:
    # the open refuses the store with CorruptError, and writes nothing.
    path = tmp_path / "s.redb"
    config = {"type": "file", "path": str(path), "checkpoint_kb": 1}
    store = kvstash.open(config)
    for i in range(300):
        store.bucket("devices").set(f"sensor_{i:03}", {"alias": f"sensor {i}"})
    del store
    data = bytearray(path.read_bytes())
    at = data.find(b"sensor_150")
    assert at > 0, "the record is in redb's file"
    page = at - at % 4096
    for j in range(page + 2, page + 6):
        data[j] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(kvstash.CorruptError) as raised:
        kvstash.open(config)
    assert raised.value.code == "corrupt"
    assert "integrity check" in str(raised.value)
    assert path.read_bytes() == bytes(data)


def test_readme_example(tmp_path, monkeypatch, capsys):
    # The README's "Use it from Python", as written there.
    monkeypatch.chdir(tmp_path)
    sync, _ = readme_python_blocks()
    scope = {}
    exec(compile(sync, "README.md", "exec"), scope)
    assert scope["entry"].value == [1, 5, 42]
    assert scope["aliases"].get("environment_sensor_1").value == [1, 5, 42]
    assert "someone else wrote it first; it is at version 1" in capsys.readouterr().out


def test_watch_in_order_and_resumable(store):
    b = store.bucket("w")
    watch = b.watch(since=0)
    v1 = b.set("a", 1)
    b.delete("a")
    first = watch.next_event(5)
    assert (first.version, first.key, first.kind, first.value) == (v1, "a", "set", 1)
    second = next(watch)
    assert (second.key, second.kind, second.value) == ("a", "delete", None)
    assert second.version > v1
    assert watch.next_event(0.05) is None, "a timeout loses nothing"
    b.set("b", 2)
    assert next(watch).key == "b"
    # Resuming after an event sees what came after it.
    again = b.watch(since=first.version)
    assert next(again).version == second.version


def test_transactions(store):
    a, b = store.bucket("a"), store.bucket("b")
    va = a.set("x", {"n": 1})
    v = (
        store.transaction()
        .check_version("a", "x", va)
        .check_absent("b", "y")
        .set("b", "y", b"raw", ttl=60)
        .increment("a", "count", 5)
        .set_path("a", "x", "/n", 2)
        .commit()
    )
    assert v > va
    assert a.get("x").value == {"n": 2} and a.get("x").version == v
    assert b.get("y").value == b"raw" and b.get("y").expires_at is not None
    assert a.get("count").value == 5
    # A failed check: nothing written, the index and the key's version told.
    tx = store.transaction().check_exists("a", "x").check_equals("a", "x", {"n": 1}).delete("a", "x")
    with pytest.raises(kvstash.ConflictError) as raised:
        tx.commit()
    assert raised.value.index == 1 and raised.value.current == v
    assert a.get("x").value == {"n": 2}
    # A transaction commits once.
    with pytest.raises(kvstash.InvalidError):
        tx.commit()
    with pytest.raises(kvstash.InvalidError):
        tx.delete("a", "x")
    # A bad mutation fails the whole transaction.
    with pytest.raises(kvstash.InvalidError):
        store.transaction().delete("a", "x").set_path("a", "x", "no-slash", 1).commit()
    assert a.get("x").value == {"n": 2}


def test_document_paths(store):
    d = store.bucket("docs")
    d.set("cfg", {"wifi": {"ssid": "home"}, "tags": []})
    assert d.get_path("cfg", "/wifi/ssid").value == "home"
    assert d.get_path("cfg", "").value == {"wifi": {"ssid": "home"}, "tags": []}
    assert d.get_path("missing", "/a") is None
    with pytest.raises(kvstash.NotFoundError):
        d.get_path("cfg", "/wifi/password")
    v = d.set_path("cfg", "/wifi/ssid", "shed")
    assert d.get_path("cfg", "/wifi/ssid").version == v
    d.append_path("cfg", "/tags", {"t": 1})
    d.delete_path("cfg", "/wifi")
    assert d.get("cfg").value == {"tags": [{"t": 1}]}
    with pytest.raises(kvstash.InvalidError):
        d.set_path("cfg", "/tags/x", float("nan"))
    assert d.get("cfg").value == {"tags": [{"t": 1}]}
    assert d.exists("cfg") and not d.exists("nope")


def test_locks_fence_writes(store):
    with store.lock("leader", ttl=30, owner="me") as lease:
        assert lease.name == "leader" and lease.token > 0
        holder = store.lock_status("leader")
        assert holder.token == lease.token and holder.owner == "me"
        with pytest.raises(kvstash.LockedError):
            store.lock("leader", ttl=30)
        store.transaction().check_lease(lease).set("a", "k", 1).commit()
        lease.renew(60)
        assert lease.expires_at > holder.expires_at
    assert store.lock_status("leader") is None
    # A stale lease no longer fences a write in.
    with pytest.raises(kvstash.ConflictError):
        store.transaction().check_lease(lease).set("a", "k", 2).commit()
    with pytest.raises(kvstash.LeaseLostError):
        lease.renew(10)
    assert store.bucket("a").get("k").value == 1


def test_history_and_schema(store):
    b = store.bucket("typed")
    b.set_history(10)
    b.set("k", 1)
    b.set("k", 2)
    assert b.history() == (2, 0)
    b.undo()
    assert b.get("k").value == 1 and b.history() == (1, 1)
    b.redo()
    assert b.get("k").value == 2
    b.set_schema({"type": "integer"})
    assert b.schema()[0] == {"type": "integer"}
    with pytest.raises(kvstash.InvalidError):
        b.set("k", "text")
    assert b.get("k").value == 2
