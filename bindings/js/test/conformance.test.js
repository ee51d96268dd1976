// The conformance cases (tests/conformance/cases.json at the repository
// root) through the JS API, on fresh memory and file stores: the same
// cases the Rust API and the Python package run.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import * as kvstash from '../src/index.js';

const { cases } = JSON.parse(readFileSync(new URL('../../../tests/conformance/cases.json', import.meta.url), 'utf8'));
const dir = mkdtempSync(join(tmpdir(), 'kvstash-js-conformance-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Runner {
  constructor(store, config) {
    this.store = store;
    this.config = config;
    this.vars = new Map();
  }

  resolve(v) {
    if (typeof v === 'string' && v.startsWith('$')) {
      assert.ok(this.vars.has(v.slice(1)), `${v} was not saved`);
      return this.vars.get(v.slice(1));
    }
    return v;
  }

  str(v) {
    if (v !== null && typeof v === 'object' && 'repeat' in v) return v.repeat.repeat(v.times);
    return this.resolve(v);
  }

  opt(v) {
    return v === undefined || v === null ? undefined : this.str(v);
  }

  /** A value in a transaction's arrays: {"$bytes": [..]} or JSON. */
  value(v) {
    return v !== null && typeof v === 'object' && '$bytes' in v ? new Uint8Array(v.$bytes) : this.resolve(v);
  }

  async run(step) {
    const s = (field) => this.str(step[field]);
    if (step.op === 'sleep') return sleep(step.ms).then(() => null);
    if (step.op === 'transaction') return this.transaction(step);
    if (step.op === 'reopen') {
      if (this.config.type !== 'memory') {
        await this.store.close();
        this.store = await kvstash.open(this.config, { sweepInterval: 0 });
      }
      return null;
    }
    const b = this.store.bucket(s('bucket'));
    switch (step.op) {
      case 'get':
        return entry(await b.get(s('key')));
      case 'set':
        return b.set(s('key'), 'bytes' in step ? new Uint8Array(step.bytes) : step.value, {
          ifVersion: this.opt(step.if_version),
          ifAbsent: step.if_absent ?? false,
          ttl: step.ttl_ms,
        });
      case 'delete':
        return b.delete(s('key'));
      case 'exists':
        return b.exists(s('key'));
      case 'increment':
        return b.increment(s('key'), step.delta);
      case 'get_path': {
        const pv = await b.getPath(s('key'), s('path'));
        return pv === null ? null : { value: pv.value, version: pv.version };
      }
      case 'set_path':
        return b.setPath(s('key'), s('path'), step.value);
      case 'append_path':
        return b.appendPath(s('key'), s('path'), step.value);
      case 'delete_path':
        return b.deletePath(s('key'), s('path'));
      case 'set_schema':
        return b.setSchema(step.schema);
      case 'list': {
        const page = await b.list({
          prefix: this.opt(step.prefix),
          start: this.opt(step.start),
          end: this.opt(step.end),
          limit: step.limit,
          cursor: this.opt(step.cursor),
          reverse: step.reverse ?? false,
        });
        return {
          keys: page.items.map((i) => i.key),
          values: page.items.map((i) => (i.value instanceof Uint8Array ? [...i.value] : i.value)),
          cursor: page.cursor,
        };
      }
      case 'watch': {
        const events = [];
        if (step.count > 0) {
          const signal = AbortSignal.timeout(5000);
          for await (const e of b.watch({ since: this.resolve(step.since), prefix: this.opt(step.prefix), signal })) {
            events.push([e.kind, e.key, e.value]);
            if (events.length === step.count) break;
          }
        }
        return { events };
      }
      default:
        throw new Error(`unknown op ${step.op}`);
    }
  }

  transaction(step) {
    const tx = this.store.transaction();
    const r = (v) => this.resolve(v);
    for (const check of step.checks ?? []) {
      const [[kind, args]] = Object.entries(check);
      const [b, k] = [r(args[0]), r(args[1])];
      if (kind === 'version') tx.checkVersion(b, k, r(args[2]));
      else if (kind === 'absent') tx.checkAbsent(b, k);
      else if (kind === 'exists') tx.checkExists(b, k);
      else if (kind === 'equals') tx.checkEquals(b, k, this.value(args[2]));
      else throw new Error(`unknown check ${kind}`);
    }
    for (const write of step.writes ?? []) {
      const [kind, args] = Object.entries(write).find(([k]) => k !== 'ttl_ms');
      const [b, k] = [r(args[0]), r(args[1])];
      const ttl = write.ttl_ms;
      if (kind === 'set') tx.set(b, k, this.value(args[2]), { ttl });
      else if (kind === 'delete') tx.delete(b, k);
      else if (kind === 'increment') tx.increment(b, k, args[2]);
      else if (kind === 'set_path') tx.setPath(b, k, r(args[2]), args[3]);
      else if (kind === 'delete_path') tx.deletePath(b, k, r(args[2]));
      else if (kind === 'append_path') tx.appendPath(b, k, r(args[2]), args[3]);
      else throw new Error(`unknown write ${kind}`);
    }
    return tx.commit();
  }

  check(step, outcome, at) {
    const expect = step.expect ?? {};
    if ('error' in expect) {
      assert.ok('error' in outcome, `${at}: expected error ${expect.error}, got ${JSON.stringify(outcome.ok)}`);
      const e = outcome.error;
      assert.ok(e instanceof kvstash.KvstashError, `${at}: ${e}`);
      assert.equal(e.code, expect.error, `${at}: ${e.message}`);
      if ('current' in expect) assert.equal(e.current, this.resolve(expect.current), `${at}: current`);
      if ('index' in expect) assert.equal(e.index, expect.index, `${at}: index`);
      return;
    }
    if ('error' in outcome) throw Object.assign(outcome.error, { message: `${at}: ${outcome.error.message}` });
    const result = outcome.ok;
    for (const [field, raw] of Object.entries(expect)) {
      const want = this.resolve(raw);
      if (field === 'result') assert.deepEqual(result, want, at);
      else if (field === 'absent') assert.equal(result === null, want, `${at}: ${JSON.stringify(result)}`);
      else if (field === 'newer_than') assert.ok(result > want, `${at}: ${result} is not newer than ${want}`);
      else if (field === 'more') assert.equal(result.cursor !== null, want, at);
      else if (['value', 'bytes', 'version', 'expires', 'keys', 'values', 'events'].includes(field)) {
        assert.ok(result !== null, `${at}: absent`);
        assert.deepEqual(result[field], want, `${at}: ${field}`);
      } else throw new Error(`${at}: unknown expectation ${field}`);
    }
    if (step.save) {
      let saved = result;
      if (result !== null && typeof result === 'object') saved = 'cursor' in result ? result.cursor : result.version;
      this.vars.set(step.save, saved);
    }
  }
}

function entry(e) {
  if (e === null) return null;
  const field = e.value instanceof Uint8Array ? 'bytes' : 'value';
  return { [field]: field === 'bytes' ? [...e.value] : e.value, version: e.version, expires: e.expiresAt !== null };
}

let n = 0;
for (const backend of ['memory', 'file']) {
  describe(`conformance on ${backend} storage`, () => {
    for (const c of cases) {
      test(c.name, async () => {
        const config = backend === 'memory' ? { type: 'memory' } : { type: 'file', path: join(dir, `case-${n++}.kvlog`) };
        const runner = new Runner(await kvstash.open(config, { sweepInterval: 0 }), config);
        try {
          for (const [i, step] of c.steps.entries()) {
            let outcome;
            try {
              outcome = { ok: await runner.run(step) };
            } catch (error) {
              outcome = { error };
            }
            runner.check(step, outcome, `${c.name} (step ${i}, ${step.op}) on ${backend}`);
          }
        } finally {
          await runner.store.close();
        }
      });
    }
  });
}

test('the cases are there', () => {
  assert.ok(cases.length >= 9);
});
