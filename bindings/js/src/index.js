// kvstash for JavaScript: the kvstash component (transpiled by jco into
// ../gen) with storage written in JS (./storage.js). Every store logic
// decision (versions, conditions, TTL, paths, transactions, locks, watch)
// is the component's; this file only translates between JS values and
// the component's WIT interface `kvstash:store/store@0.1.0`.

import { readFile } from 'node:fs/promises';
import { cli, clocks, io } from '@bytecodealliance/preview2-shim';
import { instantiate } from '../gen/kvstash.js';
import { backendClass, release } from './storage.js';
import { InvalidError, KvstashError, LockedError, StorageError, fromWit } from './errors.js';

export * from './errors.js';

const STORE = 'kvstash:store/store@0.1.0';

/** The component's core modules, compiled once per process. */
const modules = new Map();
function coreModule(name) {
  let module = modules.get(name);
  if (module === undefined) {
    module = readFile(new URL(`../gen/${name}`, import.meta.url)).then((b) => WebAssembly.compile(b));
    modules.set(name, module);
  }
  return module;
}

/** WASI as the component sees it: clocks and stdio; no environment. */
const wasi = {
  'wasi:cli/environment': {
    getEnvironment: () => [],
    getArguments: () => [],
    initialCwd: () => undefined,
  },
  'wasi:cli/exit': cli.exit,
  'wasi:cli/stderr': cli.stderr,
  'wasi:cli/stdin': cli.stdin,
  'wasi:cli/stdout': cli.stdout,
  'wasi:cli/terminal-input': cli.terminalInput,
  'wasi:cli/terminal-output': cli.terminalOutput,
  'wasi:cli/terminal-stderr': cli.terminalStderr,
  'wasi:cli/terminal-stdin': cli.terminalStdin,
  'wasi:cli/terminal-stdout': cli.terminalStdout,
  'wasi:clocks/monotonic-clock': clocks.monotonicClock,
  'wasi:clocks/wall-clock': clocks.wallClock,
  'wasi:io/error': io.error,
  'wasi:io/poll': io.poll,
  'wasi:io/streams': io.streams,
};

const toBig = (what, n) => {
  if (typeof n === 'bigint') return n;
  if (!Number.isSafeInteger(n)) throw new InvalidError(`${what} must be an integer, not ${n}`, 'invalid-argument');
  return BigInt(n);
};
const toU32 = (what, n) => {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new InvalidError(`${what} must be an integer from 0 to 2^32-1, not ${n}`, 'invalid-argument');
  }
  return n;
};
const toMs = (what, ms) => {
  if (ms === undefined || ms === null) return undefined;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new InvalidError(`${what} must be a number of milliseconds >= 0, not ${ms}`, 'invalid-argument');
  }
  return BigInt(Math.ceil(ms));
};
/** `v`, which must be a string (a key, bucket, path, name or cursor). */
const text = (what, v) => {
  if (typeof v !== 'string') throw new InvalidError(`${what} must be a string, not ${typeof v}`, 'invalid-argument');
  return v;
};
const optText = (what, v) => (v === undefined || v === null ? undefined : text(what, v));
const num = (v) => (v === undefined ? null : Number(v));
const date = (ms) => (ms === undefined ? null : new Date(Number(ms)));

/** A JS value as a stored value: Uint8Array as bytes, the rest as JSON. */
function toValue(value) {
  if (value instanceof Uint8Array) return { tag: 'bytes', val: value };
  let json;
  try {
    json = JSON.stringify(value);
  } catch (e) {
    throw new InvalidError(`the value cannot be stored as JSON: ${e.message}`, 'invalid-value');
  }
  if (json === undefined) {
    throw new InvalidError(`a ${typeof value} cannot be stored as JSON`, 'invalid-value');
  }
  return { tag: 'json', val: json };
}

function toJson(what, value) {
  const v = toValue(value);
  if (v.tag !== 'json') throw new InvalidError(`${what} must be JSON, not bytes`, 'invalid-value');
  return v.val;
}

function fromValue(value) {
  return value.tag === 'bytes' ? value.val : JSON.parse(value.val);
}

function entryOf(e) {
  return { value: fromValue(e.value), version: Number(e.version), expiresAt: date(e.expiresAt) };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Opens a store. `config` is the storage configuration (an object or JSON
 * text): `{type: "memory"}` or `{type: "file", path: "data.kvlog"}`, with
 * kvstash's layer options (docs/semantics.md). `options.sweepInterval`:
 * milliseconds between background sweeps of expired keys (default 60000;
 * 0: never).
 */
export async function open(config, options = {}) {
  const text = typeof config === 'string' ? config : JSON.stringify(config);
  if (typeof text !== 'string') throw new InvalidError('config must be an object or JSON text', 'invalid-config');
  const store = new Store(text, options);
  await store._start();
  return store;
}

export class Store {
  #config;
  #instance = null;
  #buckets = new Map();
  /** Configuration text → the engine it opened; kept across restarts. */
  #engines = new Map();
  /** Why the last re-instantiation failed, if it did. */
  #broken = null;
  #closed = false;
  #sweeper;
  #options;

  /** @internal use `open()`. */
  constructor(config, options) {
    this.#config = config;
    this.#options = options;
  }

  async _start() {
    await this.#instantiate();
    // Open the storage now, so a bad configuration fails `open`.
    this._call((api) => api.buckets());
    const every = this.#options.sweepInterval ?? 60_000;
    if (every > 0) {
      this.#sweeper = setInterval(() => {
        this.sweep(1000).catch(() => {});
      }, every);
      this.#sweeper.unref();
    }
  }

  async #instantiate() {
    const engines = this.#engines;
    const config = this.#config;
    this.#instance = await instantiate(coreModule, {
      ...wasi,
      'kvstash:store/storage': { Backend: backendClass(engines), config: () => config },
    });
    this.#buckets.clear();
  }

  /**
   * Runs `fn(storeApi)` on the component, mapping its errors: the
   * component's own as KvstashErrors, and anything else thrown inside it
   * (a trap; a stack overflow is a RangeError) as StorageError, after
   * which the instance is replaced. Arguments are checked in JS before
   * the call, so nothing jco cannot pass reaches it.
   */
  _call(fn) {
    if (this.#closed) throw new InvalidError('the store is closed', 'invalid-argument');
    if (this.#instance === null) {
      if (this.#broken !== null) this.#restart();
      throw new StorageError(
        `the store is restarting after a failure${this.#broken ? ` (${this.#broken.message})` : ''}`,
        'trap',
      );
    }
    try {
      return fn(this.#instance[STORE]);
    } catch (e) {
      if (e && typeof e.tag === 'string') throw fromWit(e);
      // Checked here before the component was called.
      if (e instanceof KvstashError) throw e;
      this.#restart();
      throw fromWit(e);
    }
  }

  /**
   * After a trap the instance is unusable: make a new one. The engines
   * stay: commits are atomic in them, so nothing a trap interrupted is
   * half there, and a memory store keeps its data.
   */
  #restart() {
    this.#instance = null;
    this.#broken = null;
    this.#buckets.clear();
    this.#instantiate().catch((e) => {
      this.#broken = e instanceof Error ? e : new Error(String(e));
    });
  }

  /** The guest's handle for bucket `name`, opened once. */
  _handle(name) {
    let handle = this.#buckets.get(name);
    if (handle === undefined) {
      handle = this._call((api) => api.Bucket.open(name));
      this.#buckets.set(name, handle);
    }
    return handle;
  }

  /** A bucket: keys to values. Buckets need no creating. */
  bucket(name) {
    return new Bucket(this, text('bucket name', name));
  }

  /** The names of the buckets that hold keys. */
  async buckets() {
    return this._call((api) => api.buckets());
  }

  /** A transaction: chain checks and writes, then `await tx.commit()`. */
  transaction() {
    return new Transaction(this);
  }

  /**
   * Takes the lock `name` for `ttl` ms and returns its Lease; waits up to
   * `wait` ms for another holder to let go, then throws LockedError.
   */
  async lock(name, { ttl, owner, wait = 0 } = {}) {
    const ttlMs = toMs('ttl', ttl);
    if (ttlMs === undefined) throw new InvalidError('lock needs a ttl (ms)', 'invalid-argument');
    const deadline = Date.now() + (toMs('wait', wait) === undefined ? 0 : wait);
    for (;;) {
      try {
        const lease = this._call((api) => api.acquire(text('lock name', name), ttlMs, optText('owner', owner)));
        return new Lease(this, lease);
      } catch (e) {
        if (!(e instanceof LockedError) || Date.now() >= deadline) throw e;
        const untilExpiry = e.holder.expiresAt.getTime() - Date.now();
        await sleep(Math.max(1, Math.min(50, untilExpiry, deadline - Date.now())));
      }
    }
  }

  /** Who holds the lock `name` ({token, expiresAt, owner}), or null. */
  async lockStatus(name) {
    const h = this._call((api) => api.lockStatus(text('lock name', name)));
    return h === undefined ? null : { token: Number(h.token), expiresAt: date(h.expiresAt), owner: h.owner ?? null };
  }

  /** Removes up to `limit` expired keys now; how many it removed. */
  async sweep(limit = 1000) {
    return this._call((api) => api.sweep(toU32('limit', limit)));
  }

  /** Closes the store: its files are released; later calls throw. */
  async close() {
    if (this.#closed) return;
    clearInterval(this.#sweeper);
    this.#closed = true;
    this.#instance = null;
    this.#buckets.clear();
    for (const engine of this.#engines.values()) release(engine);
    this.#engines.clear();
  }

  async [Symbol.asyncDispose]() {
    await this.close();
  }

  /** @internal engines this store opened, for watch wake-ups. */
  get _engines() {
    return [...this.#engines.values()];
  }
}

export class Bucket {
  #store;

  constructor(store, name) {
    this.#store = store;
    this.name = name;
  }

  #call(fn) {
    const handle = this.#store._handle(this.name);
    return this.#store._call(() => fn(handle));
  }

  /** The entry at `key` ({value, version, expiresAt}), or null. */
  async get(key) {
    const e = this.#call((b) => b.get(text('key', key)));
    return e === undefined ? null : entryOf(e);
  }

  /**
   * Stores `value` (anything JSON.stringify takes, or a Uint8Array);
   * returns the new version. `ifVersion`: only if the key is at that
   * version; `ifAbsent`: only if it has none (else ConflictError);
   * `ttl`: milliseconds to live.
   */
  async set(key, value, { ifVersion, ifAbsent = false, ttl } = {}) {
    const options = {
      ifVersion: ifVersion === undefined || ifVersion === null ? undefined : toBig('ifVersion', ifVersion),
      ifAbsent: Boolean(ifAbsent),
      ttlMs: toMs('ttl', ttl),
    };
    const v = toValue(value);
    return Number(this.#call((b) => b.setWith(text('key', key), v, options)));
  }

  /** Deletes `key`; whether it existed. */
  async delete(key) {
    return this.#call((b) => b.delete(text('key', key)));
  }

  /** Whether `key` holds a live value. */
  async exists(key) {
    return this.#call((b) => b.exists(text('key', key)));
  }

  /** Adds `delta` to the integer at `key` (absent: 0), atomically; the new value. */
  async increment(key, delta = 1) {
    const d = toBig('delta', delta);
    return Number(this.#call((b) => b.increment(text('key', key), d)));
  }

  /**
   * One page of entries in key order: `{items: [{key, value, version,
   * expiresAt}], cursor}`; pass `cursor` back for the next page (null:
   * no more).
   */
  async list({ prefix, start, end, limit, cursor, reverse = false, keysOnly = false } = {}) {
    const page = this.#call((b) =>
      b.list({
        prefix: optText('prefix', prefix),
        start: optText('start', start),
        end: optText('end', end),
        limit: limit === undefined || limit === null ? undefined : toU32('limit', limit),
        cursor: optText('cursor', cursor),
        reverse: Boolean(reverse),
        keysOnly: Boolean(keysOnly),
      }),
    );
    return {
      items: page.items.map((i) => ({
        key: i.key,
        value: i.value === undefined ? null : fromValue(i.value),
        version: Number(i.version),
        expiresAt: date(i.expiresAt),
      })),
      cursor: page.cursor ?? null,
    };
  }

  /** Every entry (following cursors): `for await (const item of bucket.entries({prefix}))`. */
  async *entries(options = {}) {
    let cursor = null;
    do {
      const page = await this.list({ ...options, cursor });
      yield* page.items;
      cursor = page.cursor;
    } while (cursor !== null);
  }

  /**
   * The JSON at `path` (an RFC 6901 pointer such as "/wifi/ssid"; "" is
   * the whole document) as {value, version}; null if the key is absent,
   * NotFoundError if the path is.
   */
  async getPath(key, path) {
    const pv = this.#call((b) => b.getPath(text('key', key), text('path', path)));
    return pv === undefined ? null : { value: JSON.parse(pv.json), version: Number(pv.version) };
  }

  /** Sets the JSON at `path` inside the document at `key`; the new version. */
  async setPath(key, path, value) {
    const json = toJson('a path value', value);
    return Number(this.#call((b) => b.setPath(text('key', key), text('path', path), json)));
  }

  /** Removes the value at `path`; the new version. */
  async deletePath(key, path) {
    return Number(this.#call((b) => b.deletePath(text('key', key), text('path', path))));
  }

  /** Appends `value` to the array at `path`; the new version. */
  async appendPath(key, path, value) {
    const json = toJson('a path value', value);
    return Number(this.#call((b) => b.appendPath(text('key', key), text('path', path), json)));
  }

  /** Makes the bucket typed by a JSON Schema (null: untyped again); the version. */
  async setSchema(schema, { force = false } = {}) {
    const json = schema === null || schema === undefined ? undefined : toJson('a schema', schema);
    return Number(this.#call((b) => b.setSchema(json, Boolean(force))));
  }

  /** The bucket's schema as {schema, version}, or null. */
  async schema() {
    const s = this.#call((b) => b.getSchema());
    return s === undefined ? null : { schema: JSON.parse(s.json), version: Number(s.version) };
  }

  /** Keeps the last `keep` changes for undo/redo (0: off). */
  async setHistory(keep) {
    this.#call((b) => b.setHistory(toU32('keep', keep)));
  }

  /** Undoes the last change, as a new version (returned). */
  async undo() {
    return Number(this.#call((b) => b.undo()));
  }

  /** Redoes the last undone change; the new version. */
  async redo() {
    return Number(this.#call((b) => b.redo()));
  }

  /** {undoable, redoable}: how many changes undo and redo can take back. */
  async history() {
    const h = this.#call((b) => b.history());
    return { undoable: Number(h.undoable), redoable: Number(h.redoable) };
  }

  /**
   * The bucket's changes, in version order, as an async iterable of
   * events {version, key, kind: "set" | "delete" | "expire", value,
   * expiresAt}: after version `since`, or from this call on when it is
   * omitted; only keys starting with `prefix`. Resume after an event with
   * `since: event.version`. Stop with `break`, or with `signal`.
   */
  watch({ since, prefix, signal } = {}) {
    return new Watch(this.#store, this, since, prefix, signal);
  }

  /** @internal one page of the bucket's changes. */
  _changes(prefix, since, limit) {
    return this.#call((b) => b.watch(prefix, since, limit));
  }
}

/** Waits for a commit to one of `engines`, `ms`, or `signal`. */
function nextCommit(engines, ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const e of engines) e.listeners.delete(done);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const e of engines) e.listeners.add(done);
    signal?.addEventListener('abort', done);
  });
}

class Watch {
  #store;
  #bucket;
  #since;
  #prefix;
  #signal;
  #buffer = [];

  constructor(store, bucket, since, prefix, signal) {
    this.#store = store;
    this.#bucket = bucket;
    this.#prefix = optText('prefix', prefix);
    this.#signal = signal;
    if (since === undefined || since === null) {
      // Fix "now" before returning, so no later write is missed.
      this.#since = bucket._changes(this.#prefix, undefined, 1000).next;
    } else {
      this.#since = toBig('since', since);
    }
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this.#signal?.aborted) return;
      if (this.#buffer.length > 0) {
        yield this.#buffer.shift();
        continue;
      }
      const page = this.#bucket._changes(this.#prefix, this.#since, 1000);
      this.#since = page.next;
      for (const e of page.events) {
        this.#buffer.push({
          version: Number(e.version),
          key: e.key,
          kind: e.kind,
          value: e.value === undefined ? null : fromValue(e.value),
          expiresAt: date(e.expiresAt),
        });
      }
      if (this.#buffer.length === 0) await nextCommit(this.#store._engines, 1000, this.#signal);
    }
  }
}

/**
 * Checks and writes committed together: chain the methods, then
 * `await commit()`. Either every check holds and every write lands at one
 * version, or nothing is written and commit throws (ConflictError with the
 * failed check's `index`). A transaction commits once.
 */
export class Transaction {
  #store;
  #checks = [];
  #mutations = [];
  #committed = false;

  constructor(store) {
    this.#store = store;
  }

  #key(bucket, key, condition) {
    this.#checks.push({ tag: 'key', val: { bucket: text('bucket name', bucket), key: text('key', key), condition } });
    return this;
  }

  #op(bucket, key, op, ttl) {
    this.#mutations.push({ bucket: text('bucket name', bucket), key: text('key', key), op, ttlMs: toMs('ttl', ttl) });
    return this;
  }

  /** Only if `key` is live at exactly `version`. */
  checkVersion(bucket, key, version) {
    return this.#key(bucket, key, { tag: 'version-is', val: toBig('version', version) });
  }

  /** Only if `key` is absent (or expired). */
  checkAbsent(bucket, key) {
    return this.#key(bucket, key, { tag: 'absent' });
  }

  /** Only if `key` is live. */
  checkExists(bucket, key) {
    return this.#key(bucket, key, { tag: 'exists' });
  }

  /** Only if `key` holds `value` (JSON compared as JSON, bytes as bytes). */
  checkEquals(bucket, key, value) {
    return this.#key(bucket, key, { tag: 'value-equals', val: toValue(value) });
  }

  /** Only while `lease` still holds its lock (fencing). */
  checkLease(lease) {
    if (!(lease instanceof Lease)) throw new InvalidError('checkLease needs a Lease from store.lock()', 'invalid-argument');
    this.#checks.push({ tag: 'lease', val: { name: lease.name, token: BigInt(lease.token) } });
    return this;
  }

  /** Stores `value`; `ttl`: milliseconds to live. */
  set(bucket, key, value, { ttl } = {}) {
    return this.#op(bucket, key, { tag: 'set', val: toValue(value) }, ttl);
  }

  delete(bucket, key) {
    return this.#op(bucket, key, { tag: 'delete' });
  }

  /** Adds `delta` to the integer at `key` (absent: 0). */
  increment(bucket, key, delta = 1) {
    return this.#op(bucket, key, { tag: 'increment', val: toBig('delta', delta) });
  }

  setPath(bucket, key, path, value) {
    return this.#op(bucket, key, { tag: 'set-path', val: { path: text('path', path), value: toJson('a path value', value) } });
  }

  deletePath(bucket, key, path) {
    return this.#op(bucket, key, { tag: 'delete-path', val: text('path', path) });
  }

  appendPath(bucket, key, path, value) {
    return this.#op(bucket, key, { tag: 'append-path', val: { path: text('path', path), value: toJson('a path value', value) } });
  }

  /** Commits; the transaction's version. */
  async commit() {
    if (this.#committed) throw new InvalidError('the transaction was already committed', 'invalid-argument');
    this.#committed = true;
    return Number(this.#store._call((api) => api.transact(this.#checks, this.#mutations)));
  }
}

/** A held lock: `name`, `token` (the fencing token) and `expiresAt`. */
export class Lease {
  #store;

  constructor(store, lease) {
    this.#store = store;
    this.#set(lease);
  }

  #set(lease) {
    this.name = lease.name;
    this.token = Number(lease.token);
    this.expiresAt = date(lease.expiresAt);
  }

  /** Extends the lease to `ttl` ms from now; LeaseLostError if it lost the lock. */
  async renew(ttl) {
    const ttlMs = toMs('ttl', ttl);
    if (ttlMs === undefined) throw new InvalidError('renew needs a ttl (ms)', 'invalid-argument');
    const lease = this.#store._call((api) => api.renew(this.name, BigInt(this.token), ttlMs));
    this.#set(lease);
  }

  /** Lets go of the lock; whether this lease still held it. */
  async release() {
    return this.#store._call((api) => api.release(this.name, BigInt(this.token)));
  }

  /** `await using lease = await store.lock(...)` releases it at scope end. */
  async [Symbol.asyncDispose]() {
    await this.release();
  }
}
