"""The asyncio API (`kvstash.aio`), run with `asyncio.run` (no plugin)."""

import asyncio

import pytest

import kvstash
import kvstash.aio

from readme import readme_python_blocks


def test_coroutines(tmp_path):
    async def main():
        store = await kvstash.aio.open({"type": "file", "path": str(tmp_path / "a.redb")})
        devices = store.bucket("devices")
        version = await devices.set("sensor-1", {"name": "backyard shed sensor"})
        entry = await devices.get("sensor-1")
        assert (entry.value, entry.version) == ({"name": "backyard shed sensor"}, version)
        assert await devices.get("missing") is None
        with pytest.raises(kvstash.ConflictError):
            await devices.set("sensor-1", 1, if_absent=True)
        # Concurrent calls from one loop: every increment counts.
        await asyncio.gather(*(devices.increment("n") for _ in range(100)))
        assert (await devices.get("n")).value == 100
        items, cursor = await devices.list(prefix="sensor-")
        assert [k for k, _ in items] == ["sensor-1"] and cursor is None
        assert await store.buckets() == ["devices"]

    asyncio.run(main())


def test_watch_does_not_block_the_loop_and_loses_nothing_when_cancelled(tmp_path):
    async def main():
        store = await kvstash.aio.open({"type": "file", "path": str(tmp_path / "w.redb")})
        b = store.bucket("b")
        events = b.watch(since=0)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        # Nothing is written: the wait times out (and is cancelled) while
        # the loop keeps running the ticker.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(events.__anext__(), 0.5)
        task.cancel()
        assert ticks >= 50, f"the loop was blocked: {ticks} ticks in 0.5 s"
        version = await b.set("k", 1)
        event = await asyncio.wait_for(events.__anext__(), 5)
        assert (event.key, event.value, event.version) == ("k", 1, version)

    asyncio.run(main())


def test_readme_async_example(tmp_path, monkeypatch, capsys):
    # The README's asyncio example, as written there.
    monkeypatch.chdir(tmp_path)
    _, aio = readme_python_blocks()
    exec(compile(aio, "README.md", "exec"), {"__name__": "__main__"})
    assert "sensor-1 set {'name': 'backyard shed sensor'}" in capsys.readouterr().out


def test_aio_transactions_paths_and_locks(tmp_path):
    async def main():
        store = await kvstash.aio.open({"type": "file", "path": str(tmp_path / "a.redb")})
        d = store.bucket("docs")
        v = await d.set("cfg", {"tags": []})
        await d.append_path("cfg", "/tags", "x")
        assert (await d.get_path("cfg", "/tags/0")).value == "x"
        async with store.lock("job", ttl=10) as lease:
            with pytest.raises(kvstash.LockedError):
                await store.lock("job", ttl=10)
            v2 = await (
                store.transaction().check_lease(lease).check_exists("docs", "cfg").set("docs", "n", 1).commit()
            )
        assert v2 > v
        assert await store.lock_status("job") is None
        lease = await store.lock("job", ttl=10)
        assert await lease.release() is True

    asyncio.run(main())
