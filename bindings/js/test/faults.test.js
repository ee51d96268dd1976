// The file storage under injected I/O failures: node:fs calls replaced for
// a moment (syncBuiltinESMExports makes the package's imports see them).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import * as kvstash from '../src/index.js';

const dir = fs.mkdtempSync(join(tmpdir(), 'kvstash-js-faults-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const open = (path, more = {}) => kvstash.open({ type: 'file', path, ...more }, { sweepInterval: 0 });

/**
 * Makes `fs[name]` throw EIO for the next `times` calls that `when`
 * picks; the returned function undoes it and says how many it failed.
 */
function failing(name, times, when = () => true) {
  const real = fs[name];
  let left = times;
  let failed = 0;
  fs[name] = (...args) => {
    if (left > 0 && when(...args)) {
      left--;
      failed++;
      throw Object.assign(new Error(`EIO: i/o error, ${name}`), { code: 'EIO' });
    }
    return real(...args);
  };
  syncBuiltinESMExports();
  return () => {
    fs[name] = real;
    syncBuiltinESMExports();
    return failed;
  };
}

test('a failed fdatasync fails the commit, and nothing of it comes back', async () => {
  const path = join(dir, `s${n++}.kvlog`);
  const store = await open(path);
  const b = store.bucket('b');
  await b.set('k', 'old');
  const restore = failing('fdatasyncSync', 1);
  try {
    await assert.rejects(b.set('k', 'new'), (e) => e instanceof kvstash.StorageError && /EIO/.test(e.message));
  } finally {
    restore();
  }
  assert.equal((await b.get('k')).value, 'old');
  // The log was cut back to its last acknowledged commit: writing goes on.
  await b.set('other', 1);
  await store.close();
  const again = await open(path);
  assert.equal((await again.bucket('b').get('k')).value, 'old');
  assert.equal((await again.bucket('b').get('other')).value, 1);
  await again.close();
});

test('when the log cannot even be cut back, writes stop until a reopen', async () => {
  const path = join(dir, `s${n++}.kvlog`);
  const store = await open(path);
  const b = store.bucket('b');
  await b.set('k', 'old');
  const restoreSync = failing('fdatasyncSync', 2);
  const restoreCut = failing('ftruncateSync', 1);
  try {
    await assert.rejects(b.set('k', 'new'), kvstash.StorageError);
  } finally {
    restoreSync();
    restoreCut();
  }
  await assert.rejects(b.set('k', 'later'), /failed a write earlier/);
  assert.equal((await b.get('k')).value, 'old');
  await store.close();
  const again = await open(path);
  // The failed commit's record was written whole before its sync failed,
  // and could not be cut: a reopen replays it. (Either value would be
  // honest for a commit that failed; a mix would not.)
  assert.equal((await again.bucket('b').get('k')).value, 'new');
  await again.bucket('b').set('k', 'after');
  await again.close();
});

test('a compaction that fails leaves the log as it was, and a later one succeeds', async () => {
  const path = join(dir, `s${n++}.kvlog`);
  const store = await open(path, { retention: 10 });
  const b = store.bucket('b');
  const big = 'v'.repeat(256 * 1024);
  const restore = failing('renameSync', Infinity, (from) => String(from).endsWith('.compact'));
  let failedOnce;
  let attempts;
  try {
    for (let i = 0; i < 40; i++) await b.set(`k${i % 4}`, { i, big });
    failedOnce = fs.statSync(path).size > 8 * 1024 * 1024;
  } finally {
    attempts = restore();
  }
  assert.ok(failedOnce, 'the log grew past the compaction point while renames failed');
  // Not one attempt per commit: the next waits for another snapshot's worth.
  assert.ok(attempts >= 1 && attempts <= 3, `${attempts} compaction attempts`);
  assert.ok(!fs.existsSync(`${path}.compact`), 'the aside file is cleaned up');
  for (let i = 40; i < 80; i++) await b.set(`k${i % 4}`, { i, big });
  assert.ok(fs.statSync(path).size < 8 * 1024 * 1024, `compacted to ${fs.statSync(path).size}`);
  await b.set('k0', 'last');
  await store.close();
  const again = await open(path, { retention: 10 });
  assert.equal((await again.bucket('b').get('k0')).value, 'last');
  assert.equal((await again.bucket('b').get('k3')).value.i, 79);
  await again.close();
});
