// The durable file storage: reopen, other processes, the lock file,
// torn tails and damage, compaction, and a SIGKILL that loses nothing
// acknowledged.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, utimesSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as kvstash from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstash-js-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const writer = fileURLToPath(new URL('./fixtures/writer.mjs', import.meta.url));
let n = 0;
const fresh = () => join(dir, `s${n++}.kvlog`);
const open = (path) => kvstash.open({ type: 'file', path }, { sweepInterval: 0 });
/** Runs the writer fixture to completion; its stdout. */
const child = (...args) => execFileSync(process.execPath, [writer, ...args], { encoding: 'utf8' }).trim();

test('aliases and display names survive a reopen and another process', async () => {
  const path = fresh();
  const store = await open(path);
  await store.bucket('aliases').set('environment_sensor_1', [1, 5, 42]);
  await store.bucket('names').set('environment_sensor_1', 'backyard shed sensor');
  await store.close();

  const again = await open(path);
  assert.deepEqual((await again.bucket('aliases').get('environment_sensor_1')).value, [1, 5, 42]);
  assert.equal((await again.bucket('names').get('environment_sensor_1')).value, 'backyard shed sensor');
  await again.close();

  child(path, 'set', 'from-child', '{"written": "elsewhere"}');
  assert.equal(child(path, 'get', 'from-child'), '{"written":"elsewhere"}');
  const third = await open(path);
  assert.deepEqual((await third.bucket('b').get('from-child')).value, { written: 'elsewhere' });
  await third.close();
});

test('racing openers: exactly one holds the file, a stale lock included', async () => {
  for (let trial = 0; trial < 4; trial++) {
    const path = fresh();
    // A lock left by a process long gone (pid 2^22 + 1 does not exist).
    if (trial % 2) writeFileSync(`${path}.lock`, '4194305 1\n');
    const at = Date.now() + 700;
    const kids = [0, 1, 2, 3].map(() =>
      spawn(process.execPath, [writer, path, 'hold-at', String(at)], { stdio: ['ignore', 'pipe', 'inherit'] }),
    );
    const said = await Promise.all(
      kids.map(
        (kid) =>
          new Promise((resolve) => {
            let out = '';
            kid.stdout.on('data', (d) => {
              out += d;
              if (out.includes('\n')) resolve(out.trim());
            });
            kid.once('exit', () => resolve(out.trim()));
          }),
      ),
    );
    for (const kid of kids) kid.kill('SIGKILL');
    await Promise.all(kids.map((kid) => new Promise((resolve) => (kid.exitCode !== null ? resolve() : kid.once('exit', resolve)))));
    assert.equal(said.filter((s) => s === 'open').length, 1, said.join(' | '));
    assert.equal(said.filter((s) => /in use by process/.test(s)).length, 3, said.join(' | '));
  }
});

test('another worker thread, or another name for the file, is refused or shared', async () => {
  const path = fresh();
  const store = await open(path);
  await store.bucket('b').set('k', 'main');
  const { Worker } = await import('node:worker_threads');
  const index = new URL('../src/index.js', import.meta.url).href;
  const worker = new Worker(
    `import(${JSON.stringify(index)}).then((kv) => kv.open({ type: 'file', path: ${JSON.stringify(path)} }))
       .then(() => require('node:worker_threads').parentPort.postMessage('open'),
             (e) => require('node:worker_threads').parentPort.postMessage(e.message));`,
    { eval: true },
  );
  const said = await new Promise((resolve) => worker.once('message', resolve));
  await worker.terminate();
  assert.match(said, /in use by this process/);

  // Through a symlinked directory: the same engine, so the same data.
  const { symlinkSync } = await import('node:fs');
  const link = join(dir, `link-${n++}`);
  symlinkSync(dir, link);
  const viaLink = await open(join(link, basename(path)));
  assert.equal((await viaLink.bucket('b').get('k')).value, 'main');
  await viaLink.bucket('b').set('k', 'via link');
  await viaLink.close();
  assert.equal((await store.bucket('b').get('k')).value, 'via link');
  await store.close();
  const again = await open(path);
  assert.equal((await again.bucket('b').get('k')).value, 'via link');
  await again.close();
});

test('locks from another pid namespace, or half written, are held while fresh', async () => {
  const old = new Date(Date.now() - 60_000);
  for (const [owner, why] of [
    ['1 4242 pid:[1]\n', 'process 1'],
    ['', 'being written'],
  ]) {
    const path = fresh();
    writeFileSync(`${path}.lock`, owner);
    // A container's pid 1 means nothing here: fresh, it is held...
    await assert.rejects(open(path), (e) => e instanceof kvstash.StorageError && e.message.includes(why));
    // ...and once its holder stopped refreshing it, it is stale.
    utimesSync(`${path}.lock`, old, old);
    const store = await open(path);
    await store.bucket('b').set('k', 1);
    await store.close();
  }
});

test('scratch files of openers that died are swept; fresh ones stay', async () => {
  const path = fresh();
  const dead = `${path}.lock.4194305.0123456789ab`;
  const young = `${path}.lock.4194305.ba9876543210`;
  writeFileSync(dead, '4194305 1\n');
  writeFileSync(young, '4194305 1\n');
  const old = new Date(Date.now() - 120_000);
  utimesSync(dead, old, old);
  const store = await open(path);
  await store.close();
  assert.ok(!existsSync(dead), 'an old scratch file of a dead pid is removed');
  assert.ok(existsSync(young), 'a recent one may be an opener at work: kept');
});

test('a symlink to a file not made yet names its target', async () => {
  const { symlinkSync } = await import('node:fs');
  const target = fresh();
  const link = join(dir, `dangling-${n++}.kvlog`);
  symlinkSync(target, link);
  const a = await open(link);
  await a.bucket('b').set('k', 'from a');
  const b = await open(target);
  assert.equal((await b.bucket('b').get('k')).value, 'from a');
  await b.close();
  await a.close();
  assert.ok(!existsSync(`${link}.lock`) && !existsSync(`${target}.lock`));
});

test('one process at a time; a dead holder does not lock the file', async () => {
  const path = fresh();
  const holder = spawn(process.execPath, [writer, path, 'hold'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    holder.stdout.once('data', resolve);
    holder.once('exit', reject);
  });
  await assert.rejects(open(path), (e) => {
    assert.ok(e instanceof kvstash.StorageError);
    assert.match(e.message, new RegExp(`in use by process ${holder.pid}`));
    return true;
  });
  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  assert.ok(existsSync(`${path}.lock`), 'a killed holder leaves its lock file');
  const store = await open(path);
  await store.bucket('b').set('k', 1);
  // Within one process, stores on one file share it.
  const second = await open(path);
  assert.equal((await second.bucket('b').get('k')).value, 1);
  await second.close();
  await store.bucket('b').set('k', 2);
  await store.close();
  assert.ok(!existsSync(`${path}.lock`));
});

test('a torn last record is cut off; damage elsewhere refuses to open and changes nothing', async () => {
  const path = fresh();
  const store = await open(path);
  for (let i = 0; i < 10; i++) await store.bucket('b').set(`k${i}`, { i });
  await store.close();
  const whole = readFileSync(path);

  // A crash mid-append: part of a record, or zeros where it should be.
  for (const tail of [Buffer.from([7, 0, 0]), whole.subarray(whole.length - 20), Buffer.alloc(64)]) {
    writeFileSync(path, Buffer.concat([whole, tail]));
    const s = await open(path);
    assert.equal((await s.bucket('b').list()).items.length, 10);
    await s.bucket('b').set('after', true);
    await s.close();
    const reopened = await open(path);
    assert.equal((await reopened.bucket('b').get('after')).value, true);
    await reopened.close();
  }

  // The last record cut short: its commit never returned, the rest is there.
  writeFileSync(path, whole.subarray(0, whole.length - 3));
  const cut = await open(path);
  assert.equal((await cut.bucket('b').list()).items.length, 9);
  await cut.close();

  // A flipped byte inside, in a payload and in a record header.
  for (const at of [whole.length - 60, 8 + 2]) {
    const damaged = Buffer.from(whole);
    damaged[at] ^= 0x40;
    writeFileSync(path, damaged);
    await assert.rejects(open(path), (e) => {
      assert.ok(e instanceof kvstash.CorruptError, String(e));
      assert.ok(e instanceof kvstash.StorageError, 'a CorruptError is a StorageError');
      assert.equal(e.code, 'corrupt');
      assert.match(e.message, /damaged at byte/);
      return true;
    });
    assert.ok(readFileSync(path).equals(damaged), 'a refused open changes nothing');
  }

  // Not a kvstash log at all.
  writeFileSync(path, 'SQLite format 3\0');
  await assert.rejects(open(path), /not a kvstash JS log/);
});

test('the log compacts, keeping every value, version and the retained feed', async () => {
  const path = fresh();
  const config = { type: 'file', path, retention: 50 };
  const store = await kvstash.open(config, { sweepInterval: 0 });
  const b = store.bucket('b');
  const big = 'v'.repeat(64 * 1024);
  const versions = {};
  for (let i = 0; i < 400; i++) versions[`k${i % 20}`] = await b.set(`k${i % 20}`, { i, big });
  // Live data ~1.3 MiB and 50 retained changes ~3.2 MiB: compaction keeps
  // the log under twice that, past its 8 MiB floor.
  const size = statSync(path).size;
  assert.ok(size < 10 * 1024 * 1024, `compacted: ${size} bytes`);
  await store.close();
  const again = await kvstash.open(config, { sweepInterval: 0 });
  const a = again.bucket('b');
  for (let k = 0; k < 20; k++) {
    const e = await a.get(`k${k}`);
    assert.equal(e.value.i, 380 + k);
    assert.equal(e.version, versions[`k${k}`]);
  }
  // The feed survived the snapshot: the last 50 changes, and no more.
  const last = versions.k19;
  const events = [];
  for await (const event of a.watch({ since: last - 50 })) {
    events.push(event.version);
    if (event.version === last) break;
  }
  assert.equal(events.length, 50);
  await assert.rejects(
    (async () => {
      for await (const event of a.watch({ since: last - 60 })) assert.fail(String(event.version));
    })(),
    (e) => e instanceof kvstash.CompactedError && e.oldest === last - 49,
  );
  // Versions go on from where they were.
  assert.ok((await a.set('next', 1)) > last);
  await again.close();
});

test('a bad last record is cut off and kept aside; a missing directory is made', async () => {
  const path = join(dir, 'made', 'on', 'open.kvlog');
  const store = await open(path);
  await store.bucket('b').set('first', 1);
  await store.bucket('b').set('last', 'x'.repeat(100));
  await store.close();
  const whole = readFileSync(path);
  const damaged = Buffer.from(whole);
  damaged[whole.length - 10] ^= 0x01;
  writeFileSync(path, damaged);
  // Indistinguishable from a torn append: the commit goes, its bytes stay.
  const s = await open(path);
  assert.equal((await s.bucket('b').get('first')).value, 1);
  assert.equal(await s.bucket('b').get('last'), null);
  await s.close();
  const kept = readdirSync(dirname(path)).filter((f) => f.startsWith('open.kvlog.torn-'));
  assert.equal(kept.length, 1, String(kept));
  const torn = readFileSync(join(dirname(path), kept[0]));
  assert.ok(torn.length > 100 && damaged.subarray(damaged.length - torn.length).equals(torn));
});

test('SIGKILL loses no acknowledged write', async () => {
  const path = fresh();
  for (let round = 0; round < 3; round++) {
    const hammer = spawn(process.execPath, [writer, path, 'hammer'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    // Kill it at a random moment once it is writing.
    await new Promise((resolve) => {
      hammer.stdout.on('data', (d) => {
        out += d;
        if (out.split('\n').length > 20) resolve();
      });
      hammer.once('exit', resolve);
    });
    await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 300));
    hammer.kill('SIGKILL');
    await new Promise((resolve) => hammer.once('exit', resolve));
    const acked = out.split('\n').filter((l) => /^\d+ \d+$/.test(l)).map((l) => l.split(' ').map(Number));
    assert.ok(acked.length > 5, `the writer made progress (${acked.length} writes)`);
    const [last, lastVersion] = acked.at(-1);
    const store = await open(path);
    const b = store.bucket('b');
    for (let i = Math.max(1, last - 49); i <= last; i++) {
      const { value } = await b.get(`k${i % 50}`);
      // The write after the last acknowledged one may have landed too.
      const landed = value.i === i || (value.i === last + 1 && (last + 1) % 50 === i % 50);
      assert.ok(landed, `k${i % 50} holds ${value.i}, acknowledged ${i}`);
    }
    assert.ok((await b.set('probe', round)) > lastVersion);
    await b.delete('probe');
    await store.close();
  }
});
