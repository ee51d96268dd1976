"""The conformance cases (tests/conformance/cases.json at the repository
root) through the Python API, on fresh memory and file stores: the same
cases the Rust API and the JS package run."""

import json
import pathlib
import time

import pytest

import kvstash

CASES = json.loads(
    (pathlib.Path(__file__).parents[3] / "tests" / "conformance" / "cases.json").read_text("utf-8")
)["cases"]


def test_the_cases_are_there():
    assert len(CASES) >= 9


def seconds(ms):
    return None if ms is None else ms / 1000


class Runner:
    def __init__(self, config):
        self.config = config
        self.store = kvstash.open(config)
        self.vars = {}

    def resolve(self, v):
        if isinstance(v, str) and v.startswith("$"):
            assert v[1:] in self.vars, f"{v} was not saved"
            return self.vars[v[1:]]
        return v

    def str(self, v):
        if isinstance(v, dict) and "repeat" in v:
            return v["repeat"] * v["times"]
        return self.resolve(v)

    def opt(self, v):
        return None if v is None else self.str(v)

    def value(self, v):
        """A value in a transaction's arrays: {"$bytes": [..]} or JSON."""
        if isinstance(v, dict) and "$bytes" in v:
            return bytes(v["$bytes"])
        return self.resolve(v)

    def run(self, step):
        op = step["op"]
        if op == "sleep":
            time.sleep(step["ms"] / 1000)
            return None
        if op == "transaction":
            return self.transaction(step)
        if op == "reopen":
            if self.config["type"] != "memory":
                del self.store
                self.store = kvstash.open(self.config)
            return None
        b = self.store.bucket(self.str(step["bucket"]))
        key = lambda: self.str(step["key"])  # noqa: E731
        path = lambda: self.str(step["path"])  # noqa: E731
        if op == "get":
            return entry(b.get(key()))
        if op == "set":
            value = bytes(step["bytes"]) if "bytes" in step else step["value"]
            return b.set(
                key(),
                value,
                if_version=self.opt(step.get("if_version")),
                if_absent=step.get("if_absent", False),
                ttl=seconds(step.get("ttl_ms")),
            )
        if op == "delete":
            return b.delete(key())
        if op == "exists":
            return b.exists(key())
        if op == "increment":
            return b.increment(key(), step["delta"])
        if op == "get_path":
            found = b.get_path(key(), path())
            return None if found is None else {"value": found.value, "version": found.version}
        if op == "set_path":
            return b.set_path(key(), path(), step["value"])
        if op == "append_path":
            return b.append_path(key(), path(), step["value"])
        if op == "delete_path":
            return b.delete_path(key(), path())
        if op == "set_schema":
            return b.set_schema(step["schema"])
        if op == "list":
            items, cursor = b.list(
                prefix=self.opt(step.get("prefix")),
                start=self.opt(step.get("start")),
                end=self.opt(step.get("end")),
                limit=step.get("limit"),
                cursor=self.opt(step.get("cursor")),
                reverse=step.get("reverse", False),
            )
            return {
                "keys": [k for k, _ in items],
                "values": [list(e.value) if isinstance(e.value, bytes) else e.value for _, e in items],
                "cursor": cursor,
            }
        if op == "watch":
            watch = b.watch(since=self.resolve(step["since"]), prefix=self.opt(step.get("prefix")))
            events = []
            for _ in range(step["count"]):
                event = watch.next_event(5)
                if event is None:
                    break
                events.append([event.kind, event.key, event.value])
            return {"events": events}
        raise AssertionError(f"unknown op {op}")

    def transaction(self, step):
        tx = self.store.transaction()
        r = self.resolve
        for check in step.get("checks", []):
            ((kind, args),) = check.items()
            b, k = r(args[0]), r(args[1])
            if kind == "version":
                tx.check_version(b, k, r(args[2]))
            elif kind == "absent":
                tx.check_absent(b, k)
            elif kind == "exists":
                tx.check_exists(b, k)
            elif kind == "equals":
                tx.check_equals(b, k, self.value(args[2]))
            else:
                raise AssertionError(f"unknown check {kind}")
        for write in step.get("writes", []):
            kind, args = next((k, v) for k, v in write.items() if k != "ttl_ms")
            b, k = r(args[0]), r(args[1])
            if kind == "set":
                tx.set(b, k, self.value(args[2]), ttl=seconds(write.get("ttl_ms")))
            elif kind == "delete":
                tx.delete(b, k)
            elif kind == "increment":
                tx.increment(b, k, args[2])
            elif kind == "set_path":
                tx.set_path(b, k, r(args[2]), args[3])
            elif kind == "delete_path":
                tx.delete_path(b, k, r(args[2]))
            elif kind == "append_path":
                tx.append_path(b, k, r(args[2]), args[3])
            else:
                raise AssertionError(f"unknown write {kind}")
        return tx.commit()

    def check(self, step, result, error, at):
        expect = step.get("expect", {})
        if "error" in expect:
            assert error is not None, f"{at}: expected error {expect['error']}, got {result!r}"
            assert isinstance(error, kvstash.KvstashError), f"{at}: {error!r}"
            assert error.code == expect["error"], f"{at}: {error}"
            if "current" in expect:
                assert error.current == self.resolve(expect["current"]), f"{at}: current"
            if "index" in expect:
                assert error.index == expect["index"], f"{at}: index"
            return
        if error is not None:
            raise AssertionError(f"{at}: unexpected {error!r}") from error
        for field, raw in expect.items():
            want = self.resolve(raw)
            if field == "result":
                assert result == want and type(result) is type(want), f"{at}: {result!r} != {want!r}"
            elif field == "absent":
                assert (result is None) == want, f"{at}: {result!r}"
            elif field == "newer_than":
                assert result > want, f"{at}: {result} is not newer than {want}"
            elif field == "more":
                assert (result["cursor"] is not None) == want, at
            elif field in ("value", "bytes", "version", "expires", "keys", "values", "events"):
                assert result is not None, f"{at}: absent"
                assert result.get(field) == want, f"{at}: {field} of {result!r}"
            else:
                raise AssertionError(f"{at}: unknown expectation {field}")
        if "save" in step:
            saved = result
            if isinstance(result, dict):
                saved = result["cursor"] if "cursor" in result else result["version"]
            self.vars[step["save"]] = saved


def entry(e):
    if e is None:
        return None
    if isinstance(e.value, bytes):
        return {"bytes": list(e.value), "version": e.version, "expires": e.expires_at is not None}
    return {"value": e.value, "version": e.version, "expires": e.expires_at is not None}


@pytest.mark.parametrize("backend", ["memory", "file"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case, backend, tmp_path):
    config = {"type": "memory"} if backend == "memory" else {"type": "file", "path": str(tmp_path / "s.redb")}
    runner = Runner(config)
    for i, step in enumerate(case["steps"]):
        at = f"{case['name']} (step {i}, {step['op']}) on {backend}"
        try:
            result, error = runner.run(step), None
        except kvstash.KvstashError as e:
            result, error = None, e
        runner.check(step, result, error, at)
