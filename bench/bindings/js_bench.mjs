// JavaScript-side throughput of the kvstash package (bindings/js), with the
// conventions of python_bench.py (keys, values, xorshift picks, seeds):
//
//   1. load N keys `sensor_{i:06d}` (one set per key; not timed);
//   2. time GETS gets of random keys, each checked against the value loaded;
//   3. time PUTS overwrites of random keys with values they never had, each
//      its own acknowledged write (on the file storage, an fdatasync).
//
// Usage: node js_bench.mjs --dir SCRATCH_DIR --n 10000 --gets 50000 --puts 2000
// stdout: one JSON object per subject (kvstash-js-memory, kvstash-js-file):
//   {"subject", "get_per_s", "put_per_s", "durable", "note"}
// The package must be built (bindings/js/gen, `npm run build`).
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as kvstash from '../../bindings/js/src/index.js';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string' },
    n: { type: 'string', default: '10000' },
    gets: { type: 'string', default: '50000' },
    puts: { type: 'string', default: '2000' },
  },
});
const n = Number(args.n);
const GET_SEED = 0x9e3779b97f4a7c15n;
const PUT_SEED = 0x2545f4914f6cdd1dn;
const MASK = (1n << 64n) - 1n;

const key = (i) => `sensor_${String(i).padStart(6, '0')}`;
const value = (i) => ({ alias: [1, 5, i % 256], name: 'backyard shed sensor', n: i });

function randomIndices(count, seed) {
  let state = seed | 1n;
  const out = [];
  for (let j = 0; j < count; j++) {
    state ^= (state << 13n) & MASK;
    state ^= state >> 7n;
    state ^= (state << 17n) & MASK;
    out.push(Number(state % BigInt(Math.max(n, 1))));
  }
  return out;
}

const getPicks = randomIndices(Number(args.gets), GET_SEED);
const putPicks = randomIndices(Number(args.puts), PUT_SEED).map((i, j) => [i, i + n + j]);

async function bench(subject, config, durable, note) {
  const store = await kvstash.open(config, { sweepInterval: 0 });
  const b = store.bucket('bench');
  for (let i = 0; i < n; i++) await b.set(key(i), value(i));
  let started = performance.now();
  for (const i of getPicks) {
    const e = await b.get(key(i));
    if (e === null || e.value.n !== i) throw new Error(`get ${key(i)} returned ${JSON.stringify(e)}`);
  }
  const getPerS = getPicks.length / ((performance.now() - started) / 1000);
  started = performance.now();
  for (const [i, v] of putPicks) await b.set(key(i), value(v));
  const putPerS = putPicks.length / ((performance.now() - started) / 1000);
  await store.close();
  console.log(JSON.stringify({ subject, get_per_s: getPerS, put_per_s: putPerS, durable, note }));
}

const file = join(args.dir, 'kvstash-js.kvlog');
rmSync(file, { force: true });
await bench('kvstash-js-memory', { type: 'memory' }, false, 'in memory');
await bench('kvstash-js-file', { type: 'file', path: file }, true, 'fdatasync per put; loaded with one set per key');
