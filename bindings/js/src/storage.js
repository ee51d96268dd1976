// The storage kvstash's component imports (wit/storage.wit), in JS.
//
// Two engines: `memory`, and `file`, a write-ahead log with fsync. Both
// keep every record in memory, ordered, so reads never touch the disk;
// the file engine appends each commit to its log and waits for fdatasync
// before the commit returns. Component imports are synchronous, so this
// code is too (node:fs *Sync calls).
//
// Keys are byte strings; here they are held as latin1 strings, one char
// per byte, whose `<` order is the bytes' order.

import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  fstatSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';
import * as zlib from 'node:zlib';

/** The limits every backend enforces (host/src/backend/mod.rs). */
export const MAX_SCAN = 10_000;
export const MAX_GET_MANY = 10_000;
export const MAX_COMMIT_OPS = 20_000;
export const MAX_KEY_BYTES = 64 * 1024;
export const MAX_VALUE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_RETENTION = 10_000;

/** A storage error, thrown as the WIT variant `storage-error`. */
const invalid = (why) => ({ tag: 'invalid', val: why });
const unavailable = (why) => ({ tag: 'unavailable', val: why });

const str = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
const bytes = (s) => new Uint8Array(Buffer.from(s, 'latin1'));

function validateKey(key) {
  if (key.length > MAX_KEY_BYTES) {
    throw invalid(`key is ${key.length} bytes, at most ${MAX_KEY_BYTES} are allowed`);
  }
}

function validateCommit(checks, writes) {
  if (checks.length === 0 && writes.length === 0) throw invalid('empty commit');
  if (checks.length + writes.length > MAX_COMMIT_OPS) {
    throw invalid(
      `commit has ${checks.length + writes.length} checks and writes, at most ${MAX_COMMIT_OPS} are allowed`,
    );
  }
  for (const check of checks) validateKey(check.tag === 'version-is' ? check.val[0] : check.val);
  for (const write of writes) {
    validateKey(write.key);
    if (write.value !== undefined && write.value.length > MAX_VALUE_BYTES) {
      throw invalid(`value is ${write.value.length} bytes, at most ${MAX_VALUE_BYTES} are allowed`);
    }
  }
}

/**
 * Records ordered by key: a Map for lookups and a sorted array of keys for
 * scans. Inserting a new key costs a binary search and an array splice
 * (O(n) moves, fast up to a few hundred thousand keys); appending in key
 * order, the common bulk-load case, is O(1).
 */
class Table {
  constructor() {
    /** @type {Map<string, {value: Uint8Array, version: bigint}>} */
    this.records = new Map();
    /** @type {string[]} */
    this.keys = [];
    /** Bytes of keys and values held, for the log's compaction rule. */
    this.bytes = 0;
  }

  /** The index of the first key >= `key`. */
  lowerBound(key) {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  put(key, value, version) {
    const old = this.records.get(key);
    if (old === undefined) {
      const n = this.keys.length;
      if (n === 0 || this.keys[n - 1] < key) this.keys.push(key);
      else this.keys.splice(this.lowerBound(key), 0, key);
      this.bytes += key.length;
    } else {
      this.bytes -= old.value.length;
    }
    this.records.set(key, { value, version });
    this.bytes += value.length;
  }

  remove(key) {
    const old = this.records.get(key);
    if (old === undefined) return;
    this.records.delete(key);
    this.keys.splice(this.lowerBound(key), 1);
    this.bytes -= key.length + old.value.length;
  }

  scan(start, end, limit, reverse) {
    const from = this.lowerBound(start);
    const to = end === undefined ? this.keys.length : this.lowerBound(end);
    const out = [];
    if (reverse) {
      for (let i = to - 1; i >= from && out.length < limit; i--) out.push(this.entry(this.keys[i]));
    } else {
      for (let i = from; i < to && out.length < limit; i++) out.push(this.entry(this.keys[i]));
    }
    return out;
  }

  entry(key) {
    const r = this.records.get(key);
    return r === undefined ? undefined : { key: bytes(key), value: r.value, version: r.version };
  }
}

/**
 * The engine both backends share: records, the version counter, the
 * retained change feed and the commit rule. `persist(version, writes)` is
 * the file engine's hook, called before anything changes in memory: if it
 * throws, the commit did not happen.
 */
class Engine {
  constructor(retention) {
    this.table = new Table();
    this.version = 0n;
    this.retention = BigInt(retention);
    /** @type {{version: bigint, key: string, value: Uint8Array | undefined}[]} */
    this.log = [];
    /** Versions up to this one are not in `log` (a compacted file's start). */
    this.floor = 0n;
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    this.readOnly = false;
  }

  get(key) {
    validateKey(key);
    return this.table.entry(str(key));
  }

  getMany(keys) {
    if (keys.length > MAX_GET_MANY) {
      throw invalid(`get-many of ${keys.length} keys, at most ${MAX_GET_MANY} are allowed`);
    }
    return keys.map((key) => this.get(key));
  }

  scan(start, end, limit, reverse) {
    validateKey(start);
    if (end !== undefined) validateKey(end);
    const from = str(start);
    const to = end === undefined ? undefined : str(end);
    if (to !== undefined && to <= from) return [];
    return this.table.scan(from, to, Math.min(limit, MAX_SCAN), reverse);
  }

  commit(checks, writes) {
    validateCommit(checks, writes);
    if (this.readOnly) throw { tag: 'read-only' };
    checks.forEach((check, index) => {
      const key = str(check.tag === 'version-is' ? check.val[0] : check.val);
      const current = this.table.records.get(key)?.version;
      const expected = check.tag === 'version-is' ? check.val[1] : undefined;
      if (current !== expected) throw { tag: 'conflict', val: { index, current } };
    });
    const version = this.version + 1n;
    this.persist(version, writes);
    this.apply(version, writes);
    for (const listener of this.listeners) listener();
    return version;
  }

  /** Durability hook: the file engine writes the commit here. */
  persist(_version, _writes) {}

  apply(version, writes) {
    for (const write of writes) {
      const key = str(write.key);
      if (write.value === undefined) this.table.remove(key);
      else this.table.put(key, write.value, version);
      this.log.push({ version, key, value: write.value });
    }
    this.version = version;
    const cut = version - this.retention;
    let drop = 0;
    while (drop < this.log.length && this.log[drop].version <= cut) drop++;
    // Trim in batches: one splice per thousand dropped changes.
    if (drop >= 1000 || (drop > 0 && drop === this.log.length)) this.log.splice(0, drop);
  }

  currentVersion() {
    return this.version;
  }

  changes(since, limit) {
    let oldest = this.version - this.retention + 1n;
    if (oldest < 1n) oldest = 1n;
    if (oldest < this.floor + 1n) oldest = this.floor + 1n;
    if (since + 1n < oldest) throw { tag: 'compacted', val: oldest };
    const max = Math.min(limit, MAX_SCAN);
    const out = [];
    // The log is in version order: find the first change after `since`.
    let lo = 0;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.log[mid].version <= since) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.log.length; i++) {
      const c = this.log[i];
      if (out.length >= max && out[out.length - 1].version !== c.version) break;
      out.push({ version: c.version, key: bytes(c.key), value: c.value });
    }
    return out;
  }

  close() {}
}

// ---------------------------------------------------------------------------
// The file engine: a write-ahead log.
//
// File: the 8-byte magic "KVSTJS01", then records, each
//   u32 LE length | u32 LE crc32(payload) | u32 LE crc32(the 8 bytes before) | payload
// payload: u8 kind, then
//   kind 1, a commit:   u64 version, u32 n, n × (u32 klen, key, u8 has, [u32 vlen, value])
//   kind 2, a snapshot: u64 version, u32 n, n × (u32 klen, key, u64 version, u32 vlen, value)
// A snapshot holds every record as of its version; it is the first record
// of a compacted file. On open, the first record that is short or fails
// a check ends the log if no sound record follows it anywhere in the file:
// that is a torn last append (a crash before its fsync returned, so its
// commit was never acknowledged), and it is cut off. If a sound record
// does follow, the file is damaged: opening refuses and touches nothing,
// rather than dropping the commits after the damage. The header's own
// checksum is what makes "a sound record" mean something: a damaged
// length cannot pass for one.

const MAGIC = Buffer.from('KVSTJS01', 'latin1');
const COMMIT = 1;
const SNAPSHOT = 2;
/** Record header: length, payload checksum, header checksum. */
const HEADER = 12;
/** Compact when the log exceeds this and twice the live data. */
const COMPACT_MIN_BYTES = 8 * 1024 * 1024;

const crc32 =
  typeof zlib.crc32 === 'function'
    ? (buf) => zlib.crc32(buf)
    : (() => {
        const table = new Uint32Array(256).map((_, n) => {
          let c = n;
          for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
          return c >>> 0;
        });
        return (buf) => {
          let c = 0xffffffff;
          for (const b of buf) c = table[(c ^ b) & 0xff] ^ (c >>> 8);
          return (c ^ 0xffffffff) >>> 0;
        };
      })();

/** Builds record payloads. */
class Writer {
  constructor(size) {
    this.buf = Buffer.allocUnsafe(Math.max(size, 64));
    this.at = 0;
  }
  room(n) {
    if (this.at + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }
  u8(v) {
    this.room(1);
    this.buf[this.at++] = v;
  }
  u32(v) {
    this.room(4);
    this.buf.writeUInt32LE(v, this.at);
    this.at += 4;
  }
  u64(v) {
    this.room(8);
    this.buf.writeBigUInt64LE(v, this.at);
    this.at += 8;
  }
  bytes(b) {
    this.u32(b.length);
    this.room(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
  }
  /** The payload framed as a record: length, crc, payload. */
  record() {
    const payload = this.buf.subarray(0, this.at);
    const head = Buffer.allocUnsafe(HEADER);
    head.writeUInt32LE(payload.length, 0);
    head.writeUInt32LE(crc32(payload), 4);
    head.writeUInt32LE(crc32(head.subarray(0, 8)), 8);
    return Buffer.concat([head, payload]);
  }
}

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.at = 0;
  }
  need(n) {
    if (this.at + n > this.buf.length) throw new Error('record ends early');
  }
  u8() {
    this.need(1);
    return this.buf[this.at++];
  }
  u32() {
    this.need(4);
    const v = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }
  u64() {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.at);
    this.at += 8;
    return v;
  }
  bytes() {
    const n = this.u32();
    this.need(n);
    // A copy: values outlive the file's read buffer.
    const b = new Uint8Array(this.buf.subarray(this.at, this.at + n));
    this.at += n;
    return b;
  }
}

function soundHeader(data, at) {
  return crc32(data.subarray(at, at + 8)) === data.readUInt32LE(at + 8);
}

/** Whether a whole record that passes both checks starts at or after `from`. */
function soundRecordAfter(data, from) {
  for (let at = from; at + HEADER <= data.length; at++) {
    if (!soundHeader(data, at)) continue;
    const end = at + HEADER + data.readUInt32LE(at);
    if (end <= data.length && crc32(data.subarray(at + HEADER, end)) === data.readUInt32LE(at + 4)) return true;
  }
  return false;
}

/** Whether process `pid` is alive (a lock file's owner). */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

class FileEngine extends Engine {
  constructor(path, retention) {
    super(retention);
    this.path = path;
    this.lockPath = `${path}.lock`;
    this.takeLock();
    try {
      this.load();
    } catch (e) {
      this.dropLock();
      throw e;
    }
  }

  /** One process at a time: a lock file holding the owner's pid. */
  takeLock() {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(this.lockPath, String(process.pid), { flag: 'wx' });
        return;
      } catch (e) {
        if (e.code !== 'EEXIST') throw unavailable(`cannot lock ${this.path}: ${e.message}`);
      }
      const owner = Number.parseInt(readFileSync(this.lockPath, 'latin1'), 10);
      if (Number.isInteger(owner) && owner !== process.pid && alive(owner)) {
        throw unavailable(`${this.path} is in use by process ${owner}`);
      }
      // Left behind by a process that died (or by this one, before a
      // crash-restart reused its pid): take it over.
      unlinkSync(this.lockPath);
    }
    throw unavailable(`cannot lock ${this.path}`);
  }

  dropLock() {
    try {
      unlinkSync(this.lockPath);
    } catch {
      // Already gone.
    }
  }

  load() {
    let data;
    try {
      data = existsSync(this.path) ? readFileSync(this.path) : Buffer.alloc(0);
    } catch (e) {
      throw unavailable(`cannot read ${this.path}: ${e.message}`);
    }
    if (data.length === 0) {
      this.fd = openSync(this.path, 'w');
      writeSync(this.fd, MAGIC);
      fsyncSync(this.fd);
      this.syncDirectory();
      this.size = MAGIC.length;
      return;
    }
    if (data.length < MAGIC.length || !data.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw invalid(`${this.path} is not a kvstash JS log (no KVSTJS01 header)`);
    }
    let at = MAGIC.length;
    while (at < data.length) {
      const end = this.replay(data, at);
      if (end === undefined) break;
      at = end;
    }
    this.fd = openSync(this.path, 'r+');
    if (at < data.length) {
      // A torn last record: the commit it held never returned.
      ftruncateSync(this.fd, at);
      fsyncSync(this.fd);
    }
    this.size = at;
    // Trim the replayed feed to the retention now, not at the next commit.
    const cut = this.version - this.retention;
    const keep = this.log.findIndex((c) => c.version > cut);
    this.log = keep < 0 ? [] : this.log.slice(keep);
  }

  /** Applies the record at `at`; its end, or undefined if it is the torn tail. */
  replay(data, at) {
    const damaged = (what) => unavailable(`${this.path} is damaged at byte ${at} (${what}); nothing was changed`);
    const bad = (what) => {
      if (soundRecordAfter(data, at + 1)) throw damaged(what);
      return undefined;
    };
    if (at + HEADER > data.length) return bad('short record header');
    if (!soundHeader(data, at)) return bad('bad record header');
    const end = at + HEADER + data.readUInt32LE(at);
    if (end > data.length) return bad('short record');
    const payload = data.subarray(at + HEADER, end);
    if (crc32(payload) !== data.readUInt32LE(at + 4)) return bad('bad checksum');
    try {
      const r = new Reader(payload);
      const kind = r.u8();
      const version = r.u64();
      const n = r.u32();
      if (kind === COMMIT) {
        const writes = [];
        for (let i = 0; i < n; i++) {
          const key = r.bytes();
          writes.push({ key, value: r.u8() ? r.bytes() : undefined });
        }
        this.apply(version, writes);
      } else if (kind === SNAPSHOT) {
        this.table = new Table();
        this.log = [];
        for (let i = 0; i < n; i++) {
          const key = str(r.bytes());
          const v = r.u64();
          this.table.put(key, r.bytes(), v);
        }
        this.version = version;
        this.floor = version;
      } else {
        throw new Error(`unknown record kind ${kind}`);
      }
    } catch (e) {
      if (e.tag) throw e;
      throw damaged(e.message);
    }
    return end;
  }

  persist(version, writes) {
    if (this.fd === undefined) throw unavailable(`${this.path} is closed`);
    if (this.broken) throw unavailable(`${this.path} failed a write earlier; reopen the store`);
    let size = 32;
    for (const w of writes) size += 9 + w.key.length + (w.value?.length ?? 0);
    const out = new Writer(size);
    out.u8(COMMIT);
    out.u64(version);
    out.u32(writes.length);
    for (const w of writes) {
      out.bytes(w.key);
      if (w.value === undefined) out.u8(0);
      else {
        out.u8(1);
        out.bytes(w.value);
      }
    }
    const record = out.record();
    try {
      let done = 0;
      while (done < record.length) {
        done += writeSync(this.fd, record, done, record.length - done, this.size + done);
      }
      fdatasyncSync(this.fd);
    } catch (e) {
      // Part of the record may be on disk: refuse further writes until a
      // reopen cuts the torn tail.
      this.broken = true;
      throw unavailable(`writing ${this.path}: ${e.message}`);
    }
    this.size += record.length;
  }

  commit(checks, writes) {
    const version = super.commit(checks, writes);
    if (this.size > COMPACT_MIN_BYTES && this.size > 2 * (this.table.bytes + 1024 * this.table.keys.length / 16)) {
      this.compact();
    }
    return version;
  }

  /** Rewrites the log as one snapshot: written aside, synced, renamed over. */
  compact() {
    const out = new Writer(this.table.bytes + 24 * this.table.keys.length + 32);
    out.u8(SNAPSHOT);
    out.u64(this.version);
    out.u32(this.table.keys.length);
    for (const key of this.table.keys) {
      const r = this.table.records.get(key);
      out.bytes(bytes(key));
      out.u64(r.version);
      out.bytes(r.value);
    }
    const record = out.record();
    const aside = `${this.path}.compact`;
    try {
      const fd = openSync(aside, 'w');
      try {
        writeSync(fd, MAGIC);
        let done = 0;
        while (done < record.length) done += writeSync(fd, record, done, record.length - done);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(aside, this.path);
      this.syncDirectory();
    } catch {
      // Compaction is an optimisation: the log is intact; try next time.
      return;
    }
    closeSync(this.fd);
    this.fd = openSync(this.path, 'r+');
    this.size = fstatSync(this.fd).size;
    // The feed in memory is unaffected; after a reopen it starts here.
  }

  syncDirectory() {
    try {
      const fd = openSync(dirname(this.path), 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch {
      // Some filesystems cannot sync a directory; the rename still landed.
    }
  }

  close() {
    if (this.fd !== undefined) {
      closeSync(this.fd);
      this.fd = undefined;
    }
    this.dropLock();
  }
}

/** Reads the whole of a small file region; used by tests to damage logs. */
export function readAt(path, position, length) {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, position);
    return buf;
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// Opening engines, shared within the process.

/** Open file engines by absolute path: one per file per process. */
const files = new Map();

function parseConfig(text) {
  let config;
  try {
    config = JSON.parse(text);
  } catch (e) {
    throw invalid(`storage configuration is not JSON: ${e.message}`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw invalid('storage configuration must be a JSON object');
  }
  const known = { memory: ['type', 'retention'], file: ['type', 'path', 'retention'] };
  const fields = known[config.type];
  if (fields === undefined) {
    throw invalid(
      `unknown backend type ${JSON.stringify(config.type)} (the JS package has "memory" and "file")`,
    );
  }
  for (const field of Object.keys(config)) {
    if (!fields.includes(field)) throw invalid(`${config.type} backend configuration: unknown field \`${field}\``);
  }
  const retention = config.retention ?? DEFAULT_RETENTION;
  if (!Number.isSafeInteger(retention) || retention < 1) {
    throw invalid(`retention must be a positive integer, not ${JSON.stringify(config.retention)}`);
  }
  if (config.type === 'file' && (typeof config.path !== 'string' || config.path === '')) {
    throw invalid('file backend configuration: `path` must be a non-empty string');
  }
  return { ...config, retention };
}

/**
 * Opens the engine a storage configuration names. Every open must be
 * matched by `release(engine)`.
 */
export function openEngine(text) {
  const config = parseConfig(text);
  if (config.type === 'memory') return new Engine(config.retention);
  const path = resolve(config.path);
  let open = files.get(path);
  if (open === undefined) {
    let engine;
    try {
      engine = new FileEngine(path, config.retention);
    } catch (e) {
      if (e.tag) throw e;
      throw unavailable(`cannot open ${path}: ${e.message}`);
    }
    open = { engine, refs: 0 };
    files.set(path, open);
  }
  open.refs++;
  return open.engine;
}

export function release(engine) {
  if (!(engine instanceof FileEngine)) return;
  const open = files.get(engine.path);
  if (open === undefined || open.engine !== engine) return;
  if (--open.refs === 0) {
    files.delete(engine.path);
    engine.close();
  }
}

/**
 * The `backend` resource class for one store's instance. Every method
 * answers with a value or throws a `storage-error` variant; any other
 * failure (a bug here) becomes `unavailable`, never a trap.
 */
export function backendClass(opened) {
  const guard = (fn) =>
    function (...args) {
      try {
        return fn.apply(this, args);
      } catch (e) {
        if (e && typeof e.tag === 'string') throw e;
        throw unavailable(`storage failed: ${e?.message ?? e}`);
      }
    };
  class Backend {
    constructor(engine) {
      this.engine = engine;
    }
  }
  Backend.open = guard((config) => {
    const engine = openEngine(config);
    opened.push(engine);
    return new Backend(engine);
  });
  Object.assign(Backend.prototype, {
    get: guard(function (key) {
      return this.engine.get(key);
    }),
    getMany: guard(function (keys) {
      return this.engine.getMany(keys);
    }),
    scan: guard(function (start, end, limit, reverse) {
      return this.engine.scan(start, end, limit, reverse);
    }),
    commit: guard(function (checks, writes) {
      return this.engine.commit(checks, writes);
    }),
    currentVersion: guard(function () {
      return this.engine.currentVersion();
    }),
    changes: guard(function (since, limit) {
      return this.engine.changes(since, limit);
    }),
  });
  return Backend;
}
