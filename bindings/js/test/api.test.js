// The package's API on the memory and file storage: values, versions,
// conditions, TTL, lists, paths, transactions, locks, schemas, history,
// watch and errors.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import * as kvstash from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstash-js-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
const backends = {
  memory: () => kvstash.open({ type: 'memory' }, { sweepInterval: 0 }),
  file: () => kvstash.open({ type: 'file', path: join(dir, `api-${files++}.kvlog`) }, { sweepInterval: 0 }),
};

/** Opens a store that is closed when test `t` ends. */
async function closing(t, opening) {
  const store = await opening;
  t.after(() => store.close());
  return store;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const [backend, openStore] of Object.entries(backends)) {
  describe(`on ${backend} storage`, () => {
    test('configured limits are InvalidErrors that write nothing', async (t) => {
      const config =
        backend === 'memory'
          ? { type: 'memory' }
          : { type: 'file', path: join(dir, `limits-${files++}.kvlog`) };
      config.limits = { key_bytes: 8, value_bytes: 64, depth: 3 };
      const store = await closing(t, kvstash.open(config, { sweepInterval: 0 }));
      const b = store.bucket('b');
      await b.set('k', [1]);
      await assert.rejects(b.set('123456789', 1), { name: 'InvalidError', code: 'invalid-key', message: /limits\.key_bytes/ });
      await assert.rejects(b.set('k', 'x'.repeat(100)), { name: 'InvalidError', code: 'invalid-value', message: /limits\.value_bytes/ });
      await assert.rejects(b.set('k', [[[[1]]]]), { name: 'InvalidError', code: 'invalid-value', message: /limits\.depth/ });
      assert.deepEqual((await b.get('k')).value, [1]);
      await assert.rejects(kvstash.open({ type: 'memory', limits: { depth: 500 } }), {
        name: 'InvalidError',
        code: 'invalid-config',
        message: /limits\.depth/,
      });
    });

    test('values and versions', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('b');
      assert.equal(b.name, 'b');
      assert.equal(await b.get('missing'), null);
      const doc = { name: 'shed', tags: ['a', 'b'], n: 1.5, none: null, nested: { deep: [true, false] } };
      const v1 = await b.set('doc', doc);
      const entry = await b.get('doc');
      assert.deepEqual(entry, { value: doc, version: v1, expiresAt: null });
      const raw = new Uint8Array([0, 255, 1, 128]);
      const v2 = await b.set('raw', raw);
      assert.ok(v2 > v1);
      assert.deepEqual((await b.get('raw')).value, raw);
      for (const scalar of [null, 0, -7, 'text', true, [], 'ünïcödé ✓']) {
        await b.set('scalar', scalar);
        assert.deepEqual((await b.get('scalar')).value, scalar);
      }
      assert.equal(await b.exists('doc'), true);
      assert.equal(await b.delete('raw'), true);
      assert.equal(await b.delete('raw'), false);
      assert.equal(await b.exists('raw'), false);
      assert.deepEqual(await store.buckets(), ['b']);
    });

    test('conditional writes', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('b');
      const v = await b.set('k', 1, { ifAbsent: true });
      await assert.rejects(b.set('k', 2, { ifAbsent: true }), (e) => {
        assert.ok(e instanceof kvstash.ConflictError);
        assert.ok(e instanceof kvstash.KvstashError);
        assert.equal(e.code, 'conflict');
        assert.equal(e.current, v);
        return true;
      });
      await assert.rejects(b.set('k', 2, { ifVersion: v + 1000 }), { name: 'ConflictError', current: v });
      await assert.rejects(b.set('absent', 2, { ifVersion: 1 }), { name: 'ConflictError', current: null });
      await b.set('k', 3, { ifVersion: v });
      assert.equal((await b.get('k')).value, 3);
    });

    test('increment and TTL', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('b');
      assert.equal(await b.increment('hits'), 1);
      assert.equal(await b.increment('hits', 41), 42);
      assert.equal(await b.increment('hits', -2), 40);
      await b.set('text', 'x');
      await assert.rejects(b.increment('text'), kvstash.InvalidError);
      const before = Date.now();
      await b.set('session', 'me', { ttl: 60_000 });
      const { expiresAt } = await b.get('session');
      assert.ok(expiresAt instanceof Date);
      assert.ok(expiresAt.getTime() >= before + 59_000 && expiresAt.getTime() <= Date.now() + 61_000);
      await b.set('brief', 'gone soon', { ttl: 30 });
      await b.set('unread', 'swept', { ttl: 30 });
      assert.equal((await b.get('brief')).value, 'gone soon');
      await sleep(80);
      assert.equal(await b.get('brief'), null);
      assert.equal(await b.exists('brief'), false);
      // A read removes what it finds expired; the sweep takes the rest.
      assert.equal(await store.sweep(), 1);
      assert.equal((await b.list({ prefix: 'unread' })).items.length, 0);
      await assert.rejects(b.set('k', 1, { ttl: -1 }), kvstash.InvalidError);
      await assert.rejects(b.set('k', 1, { ttl: Number.NaN }), kvstash.InvalidError);
    });

    test('list pages, entries, reverse, keys only', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('b');
      for (let i = 0; i < 25; i++) await b.set(`sensor_${String(i).padStart(3, '0')}`, i);
      await b.set('other', 'x');
      const seen = [];
      let cursor = null;
      let pages = 0;
      do {
        const page = await b.list({ prefix: 'sensor_', limit: 10, cursor });
        seen.push(...page.items.map((i) => [i.key, i.value]));
        cursor = page.cursor;
        pages++;
      } while (cursor !== null);
      assert.equal(pages, 3);
      assert.deepEqual(
        seen,
        Array.from({ length: 25 }, (_, i) => [`sensor_${String(i).padStart(3, '0')}`, i]),
      );
      const all = [];
      for await (const item of b.entries({ limit: 7 })) all.push(item.key);
      assert.equal(all.length, 26);
      assert.equal(all.at(-1), 'sensor_024');
      const back = await b.list({ prefix: 'sensor_', reverse: true, limit: 2, keysOnly: true });
      assert.deepEqual(
        back.items.map((i) => [i.key, i.value]),
        [['sensor_024', null], ['sensor_023', null]],
      );
      const range = await b.list({ start: 'sensor_005', end: 'sensor_008' });
      assert.deepEqual(range.items.map((i) => i.value), [5, 6, 7]);
      await assert.rejects(b.list({ cursor: 'not a cursor' }), { name: 'InvalidError', code: 'invalid-cursor' });
    });

    test('document paths', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('devices');
      await b.set('sensor', { wifi: { ssid: 'home' }, tags: ['a'] });
      assert.equal((await b.getPath('sensor', '/wifi/ssid')).value, 'home');
      assert.deepEqual((await b.getPath('sensor', '')).value, { wifi: { ssid: 'home' }, tags: ['a'] });
      const v = await b.setPath('sensor', '/wifi/channel', 6);
      assert.equal((await b.getPath('sensor', '/wifi/channel')).version, v);
      await b.appendPath('sensor', '/tags', 'b');
      await b.deletePath('sensor', '/wifi/ssid');
      assert.deepEqual((await b.get('sensor')).value, { wifi: { channel: 6 }, tags: ['a', 'b'] });
      assert.equal(await b.getPath('absent', '/x'), null);
      await assert.rejects(b.getPath('sensor', '/nope'), { name: 'NotFoundError', code: 'path-not-found' });
      await assert.rejects(b.getPath('sensor', 'no-slash'), { name: 'InvalidError', code: 'invalid-path' });
      await assert.rejects(b.appendPath('sensor', '/wifi', 1), { name: 'InvalidError', code: 'path-type-mismatch' });
      await b.set('raw', new Uint8Array([1]));
      await assert.rejects(b.getPath('raw', '/x'), { name: 'InvalidError', code: 'not-json' });
      await assert.rejects(b.setPath('sensor', '/x', new Uint8Array([1])), kvstash.InvalidError);
    });

    test('transactions commit all or nothing', async (t) => {
      const store = await closing(t, openStore());
      const a = store.bucket('a');
      const va = await a.set('x', 1);
      const version = await store
        .transaction()
        .checkVersion('a', 'x', va)
        .checkAbsent('b', 'y')
        .checkEquals('a', 'x', 1)
        .set('a', 'x', 2)
        .set('b', 'y', { made: true }, { ttl: 60_000 })
        .increment('b', 'n', 5)
        .commit();
      assert.equal((await a.get('x')).version, version);
      assert.equal((await store.bucket('b').get('y')).version, version);
      assert.equal((await store.bucket('b').get('n')).value, 5);

      const tx = store.transaction().checkExists('a', 'x').checkVersion('a', 'x', va).delete('a', 'x');
      await assert.rejects(tx.commit(), (e) => {
        assert.ok(e instanceof kvstash.ConflictError);
        assert.equal(e.code, 'check-failed');
        assert.equal(e.index, 1);
        assert.equal(e.current, version);
        return true;
      });
      assert.equal((await a.get('x')).value, 2);
      await assert.rejects(tx.commit(), /already committed/);

      // A write that fails (not JSON under a path) fails the whole.
      await a.set('bin', new Uint8Array([7]));
      await assert.rejects(
        store.transaction().set('a', 'x', 3).setPath('a', 'bin', '/k', 1).commit(),
        kvstash.InvalidError,
      );
      assert.equal((await a.get('x')).value, 2);
    });

    test('locks with fencing tokens', async (t) => {
      const store = await closing(t, openStore());
      const lease = await store.lock('leader', { ttl: 60_000, owner: 'node-1' });
      assert.equal(lease.name, 'leader');
      assert.deepEqual(await store.lockStatus('leader'), {
        token: lease.token,
        expiresAt: lease.expiresAt,
        owner: 'node-1',
      });
      await assert.rejects(store.lock('leader', { ttl: 1000 }), (e) => {
        assert.ok(e instanceof kvstash.LockedError);
        assert.equal(e.holder.token, lease.token);
        assert.equal(e.holder.owner, 'node-1');
        return true;
      });
      await store.transaction().checkLease(lease).set('cfg', 'leader', 'node-1').commit();
      await lease.renew(120_000);
      assert.ok(lease.expiresAt.getTime() > Date.now() + 100_000);
      assert.equal(await lease.release(), true);
      assert.equal(await lease.release(), false);
      await assert.rejects(lease.renew(1000), kvstash.LeaseLostError);
      await assert.rejects(store.transaction().checkLease(lease).set('cfg', 'x', 1).commit(), kvstash.ConflictError);
      assert.equal(await store.lockStatus('leader'), null);

      // A short lease: the next locker waits for it to expire.
      const short = await store.lock('job', { ttl: 50 });
      const next = await store.lock('job', { ttl: 1000, wait: 2000 });
      assert.ok(next.token > short.token);
      await next[Symbol.asyncDispose]();
      assert.equal(await store.lockStatus('job'), null);
      await assert.rejects(store.lock('job'), kvstash.InvalidError);
    });

    test('schemas and undo history', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('typed');
      const schema = { type: 'object', required: ['name'], properties: { name: { type: 'string' } } };
      await b.setSchema(schema);
      assert.deepEqual((await b.schema()).schema, schema);
      await b.set('ok', { name: 'shed' });
      await assert.rejects(b.set('bad', { name: 5 }), { name: 'InvalidError', code: 'schema-violation' });
      assert.equal(await b.get('bad'), null);
      await b.setSchema(null);
      assert.equal(await b.schema(), null);

      const h = store.bucket('h');
      await h.setHistory(10);
      await h.set('k', 1);
      await h.set('k', 2);
      assert.deepEqual(await h.history(), { undoable: 2, redoable: 0 });
      await h.undo();
      assert.equal((await h.get('k')).value, 1);
      await h.redo();
      assert.equal((await h.get('k')).value, 2);
    });

    test('watch delivers changes in order, resumes, and stops', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('w');
      const v0 = await b.set('before', 0);
      const controller = new AbortController();
      const seen = [];
      const watching = (async () => {
        for await (const event of b.watch({ prefix: 'k', signal: controller.signal })) {
          seen.push([event.kind, event.key, event.value]);
          if (seen.length === 3) break;
        }
      })();
      await sleep(20);
      await b.set('k1', 'one');
      await b.set('skip', 'not under the prefix');
      await b.set('k2', new Uint8Array([2]));
      await b.delete('k1');
      await watching;
      assert.deepEqual(seen, [
        ['set', 'k1', 'one'],
        ['set', 'k2', new Uint8Array([2])],
        ['delete', 'k1', null],
      ]);
      // Resuming from a version replays what came after it.
      const replay = [];
      for await (const event of b.watch({ since: v0 })) {
        replay.push(event.key);
        if (replay.length === 4) break;
      }
      assert.deepEqual(replay, ['k1', 'skip', 'k2', 'k1']);
      // An abort ends a waiting watch.
      const idle = (async () => {
        for await (const event of b.watch({ signal: controller.signal })) assert.fail(`unexpected ${event.key}`);
      })();
      controller.abort();
      await idle;
    });

    test('bad input is a typed error and changes nothing', async (t) => {
      const store = await closing(t, openStore());
      const b = store.bucket('b');
      await b.set('k', 'kept');
      await assert.rejects(b.set('', 1), { name: 'InvalidError', code: 'invalid-key' });
      await assert.rejects(b.set('k', undefined), { name: 'InvalidError', code: 'invalid-value' });
      await assert.rejects(b.set('k', 10n), { name: 'InvalidError', code: 'invalid-value' });
      const cyclic = {};
      cyclic.self = cyclic;
      await assert.rejects(b.set('k', cyclic), kvstash.InvalidError);
      await assert.rejects(b.set('k', 1, { ifVersion: 1.5 }), kvstash.InvalidError);
      await assert.rejects(store.bucket('').get('k'), { name: 'InvalidError', code: 'invalid-bucket' });
      await assert.rejects(b.set('k', new Uint8Array(16 * 1024 * 1024 + 1)), kvstash.InvalidError);
      assert.deepEqual((await b.get('k')).value, 'kept');
      await store.close();
      await assert.rejects(b.get('k'), /closed/);
    });
  });
}

test('bad configurations are rejected at open', async () => {
  for (const [config, pattern] of [
    ['{nope', /not valid JSON/],
    [{ type: 'floppy' }, /unknown backend type/],
    [{ type: 'file' }, /path/],
    [{ type: 'memory', retention: -1 }, /retention/],
    [{ type: 'memory', bogus: 1 }, /bogus/],
  ]) {
    await assert.rejects(kvstash.open(config), (e) => {
      assert.ok(e instanceof kvstash.InvalidError, `${JSON.stringify(config)}: ${e}`);
      assert.equal(e.code, 'invalid-config');
      assert.match(e.message, pattern);
      return true;
    });
  }
});

test('a value jco cannot pass is InvalidError, and the store keeps its data', async (t) => {
  const store = await closing(t, kvstash.open({ type: 'memory' }, { sweepInterval: 0 }));
  const b = store.bucket('b');
  await b.set('k', 'kept');
  await assert.rejects(b.get(123), { name: 'InvalidError', code: 'invalid-argument' });
  await assert.rejects(b.list({ prefix: 5 }), kvstash.InvalidError);
  await assert.rejects(b.list({ limit: -1 }), kvstash.InvalidError);
  await assert.rejects(() => Promise.resolve().then(() => store.bucket(null)), kvstash.InvalidError);
  await assert.rejects(store.sweep(2 ** 40), kvstash.InvalidError);
  const lease = await store.lock('l', { ttl: 1000 });
  await assert.rejects(lease.renew(), kvstash.InvalidError);
  // Everything is still there, at its version: nothing was restarted.
  assert.deepEqual((await b.get('k')).value, 'kept');
  assert.equal((await b.set('k2', 1)) > 2, true);
});

test('after a trap the store replaces its instance and keeps its data', async (t) => {
  const store = await closing(t, kvstash.open({ type: 'memory' }, { sweepInterval: 0 }));
  const b = store.bucket('b');
  const v = await b.set('k', 'kept');
  // What a trap looks like to the package: jco rethrows the engine's error.
  assert.throws(
    () => store._call(() => {
      throw new WebAssembly.RuntimeError('unreachable executed');
    }),
    (e) => e instanceof kvstash.StorageError && e.code === 'trap' && /unreachable/.test(e.message),
  );
  let entry;
  for (let i = 0; entry === undefined; i++) {
    try {
      entry = await b.get('k');
    } catch (e) {
      assert.ok(i < 200 && e.code === 'trap', String(e));
      await sleep(5);
    }
  }
  assert.deepEqual(entry, { value: 'kept', version: v, expiresAt: null });
  assert.equal(await b.set('k2', 1), v + 1);
});

test('layers from the configuration: read_only and prefix', async (t) => {
  const ro = await closing(t, kvstash.open({ type: 'memory', read_only: true }));
  await assert.rejects(ro.bucket('b').set('k', 1), kvstash.ReadOnlyError);
  const prefixed = await closing(t, kvstash.open({ type: 'memory', prefix: 'app/' }));
  await prefixed.bucket('b').set('k', 1);
  assert.equal((await prefixed.bucket('b').get('k')).value, 1);
});

test('a caching layer in front of a file store reads its own writes', async (t) => {
  const path = join(dir, `caching-${files++}.kvlog`);
  const store = await closing(t, kvstash.open({ type: 'caching', main: { type: 'file', path } }, { sweepInterval: 0 }));
  const b = store.bucket('b');
  await b.set('k', 1);
  assert.equal((await b.get('k')).value, 1);
  assert.equal((await b.get('k')).value, 1);
  await b.set('k', 2);
  assert.equal((await b.get('k')).value, 2);
  await assert.rejects(
    kvstash.open({ type: 'caching', main: { type: 'memory' }, policy: { timeout: 5 } }),
    (e) => e instanceof kvstash.InvalidError && /`\$\.policy\.timeout` is not a policy field/.test(e.message),
  );
});
