"""The device connector of the seed: persistent ID aliases and display names.

    python device.py STORE set ALIAS HARDWARE_ID_JSON "DISPLAY NAME"
    python device.py STORE show ALIAS

`set` records, in one atomic commit, the alias both ways (alias -> hardware
id, hardware id -> alias) and the alias's display name. `show` prints what
a later process (another run, a service restart) reads back, as one line
of JSON. The store is a kvstash file store at STORE: no other process, a
plain file, asyncio all the way. `just cross` builds this package for the
aarch64 and ARMv7 boxes the seed names; tests/tests/device.rs runs this
script under qemu-aarch64 with Debian's arm64 CPython.
"""

import asyncio
import json
import sys

import kvstash.aio


async def set_device(store, alias, hardware_id, name):
    await (
        store.transaction()
        .set("aliases", alias, hardware_id)
        .set("hardware", json.dumps(hardware_id, separators=(",", ":")), alias)
        .set("names", alias, name)
        .commit()
    )


async def show_device(store, alias):
    entry = await store.bucket("aliases").get(alias)
    if entry is None:
        return None
    hardware_id = entry.value
    back = await store.bucket("hardware").get(json.dumps(hardware_id, separators=(",", ":")))
    name = await store.bucket("names").get(alias)
    return {
        "alias": alias,
        "hardware_id": hardware_id,
        "alias_of_hardware_id": back.value if back else None,
        "name": name.value if name else None,
    }


async def main(argv):
    if len(argv) < 3 or argv[1] not in ("set", "show"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    store = await kvstash.aio.open({"type": "file", "path": argv[0]})
    if argv[1] == "set":
        if len(argv) != 5:
            print("set takes ALIAS HARDWARE_ID_JSON NAME", file=sys.stderr)
            return 2
        await set_device(store, argv[2], json.loads(argv[3]), argv[4])
        return 0
    shown = await show_device(store, argv[2])
    print(json.dumps(shown))
    return 0 if shown is not None else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
