// The durable file storage: reopen, other processes, the lock file,
// torn tails and damage, compaction, and a SIGKILL that loses nothing
// acknowledged.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
      assert.ok(e instanceof kvstash.StorageError, String(e));
      assert.match(e.message, /damaged at byte/);
      return true;
    });
    assert.ok(readFileSync(path).equals(damaged), 'a refused open changes nothing');
  }

  // Not a kvstash log at all.
  writeFileSync(path, 'SQLite format 3\0');
  await assert.rejects(open(path), /not a kvstash JS log/);
});

test('the log compacts and keeps every value and version', async () => {
  const path = fresh();
  const store = await open(path);
  const b = store.bucket('b');
  const big = 'v'.repeat(64 * 1024);
  const versions = {};
  for (let i = 0; i < 400; i++) versions[`k${i % 20}`] = await b.set(`k${i % 20}`, { i, big });
  assert.ok(statSync(path).size < 8 * 1024 * 1024 + 200 * 1024, `compacted: ${statSync(path).size} bytes`);
  await store.close();
  const again = await open(path);
  for (let k = 0; k < 20; k++) {
    const e = await again.bucket('b').get(`k${k}`);
    assert.equal(e.value.i, 380 + k);
    assert.equal(e.version, versions[`k${k}`]);
  }
  // Versions go on from where they were.
  assert.ok((await again.bucket('b').set('next', 1)) > versions.k19);
  await again.close();
});

test('SIGKILL loses no acknowledged write', async () => {
  const path = fresh();
  for (let round = 0; round < 3; round++) {
    const hammer = spawn(process.execPath, [writer, path, 'hammer'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    hammer.stdout.on('data', (d) => {
      out += d;
    });
    await new Promise((resolve) => setTimeout(resolve, 400 + 300 * round));
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
