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

import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
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
/** Damage found in what the store holds: the WIT `corrupt` case. */
const corrupt = (why) => ({ tag: 'corrupt', val: why });

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

/** What one retained change costs a snapshot, roughly. */
const changeBytes = (c) => 16 + c.key.length + (c.value?.length ?? 0);

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
    /** Where the retained changes start in `log`. */
    this.logStart = 0;
    /** Bytes of the retained changes (keys, values, overhead). */
    this.logBytes = 0;
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
      this.logBytes += changeBytes(this.log.at(-1));
    }
    this.version = version;
    // Changes past the retention are dead from `logStart` on; they are
    // spliced off in batches, one splice per thousand.
    const cut = version - this.retention;
    while (this.logStart < this.log.length && this.log[this.logStart].version <= cut) {
      this.logBytes -= changeBytes(this.log[this.logStart]);
      this.logStart++;
    }
    if (this.logStart >= 1000 || (this.logStart > 0 && this.logStart === this.log.length)) {
      this.log.splice(0, this.logStart);
      this.logStart = 0;
    }
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
    if (max === 0) return out;
    // The log is in version order: find the first change after `since`.
    let lo = this.logStart;
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
//   kind 2, a snapshot: u64 version, u32 n, n × (u32 klen, key, u64 version, u32 vlen, value),
//                       u64 floor, u32 m, m × (u64 version, u32 klen, key, u8 has, [u32 vlen, value])
// A snapshot holds every record as of its version and the change feed it
// still retains (the changes after `floor`); it is the first record of a
// compacted file, so a reopened store answers `changes` as before.
// On open, a record that ends past the end of the file under a sound
// header, or any bad record with no sound record after it, is the torn
// last append (a crash before its fsync returned, so its commit was never
// acknowledged): its bytes are copied to PATH.torn and cut off. A bad
// record with a sound record after it means damage: opening refuses and
// touches nothing, rather than drop the commits after the damage. The
// header's own checksum is what makes "a sound record" mean something: a
// damaged length cannot pass for one.

const MAGIC = Buffer.from('KVSTJS01', 'latin1');
const COMMIT = 1;
const SNAPSHOT = 2;
/** Record header: length, payload checksum, header checksum. */
const HEADER = 12;
/** The largest log `load` reads at once (Node's Buffer limit is 2 GiB). */
const MAX_LOG_BYTES = 2 ** 31 - 1;
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

/** Writes all of `buf` at `position`. */
function writeAll(fd, buf, position) {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, position + done);
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

/** When process `pid` started (clock ticks since boot; Linux), or ''. */
function startTime(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 22; the command name (field 2) may hold spaces: count from ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

/** This process's pid namespace (Linux), or ''. */
function pidNamespace() {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

/**
 * This process, as its lock files name it: pid, start time and pid
 * namespace (a container's pid 1 is not the host's).
 */
const SELF = `${process.pid} ${startTime(process.pid)} ${pidNamespace()}`;

/** A holder refreshes its lock file's mtime this often... */
const HEARTBEAT_MS = 5_000;
/** ...and a lock from another pid namespace unrefreshed this long is stale. */
const STALE_MS = 30_000;

/**
 * Whether the holder a lock file names (`owner`, its text; `mtimeMs`, its
 * last refresh) may still be using it. In this pid namespace: while that
 * pid is alive and started when the lock says (a reused pid is a new
 * process). From another namespace, whose pids mean nothing here: while
 * its holder keeps the file fresh.
 */
function alive(owner, mtimeMs) {
  const [pid, started, ns] = owner.trim().split(' ');
  if (ns && ns !== pidNamespace()) return Date.now() - mtimeMs < STALE_MS;
  const n = Number.parseInt(pid, 10);
  if (!Number.isInteger(n) || n <= 0) {
    // Empty: being written by an opener on a filesystem without hard links.
    return owner === '' && Date.now() - mtimeMs < STALE_MS;
  }
  try {
    process.kill(n, 0);
  } catch (e) {
    if (e.code !== 'EPERM') return false;
  }
  const now = started ? startTime(n) : '';
  return !now || now === started;
}

/** Blocks this thread for `ms` (lock takeover back-off only). */
function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Filesystems that cannot make hard links answer link() with these. */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * Puts a file holding `content` at `path` only if none is there: written
 * whole beside (`scratch`) and linked into place, so no reader sees it
 * half written and only one of several racing creators wins. Returns the
 * new file's inode, or null if `path` exists. Where hard links are not
 * supported, creates `path` exclusively and writes it (readers may see it
 * empty for a moment; `alive` counts an empty lock as held).
 */
function createExclusive(path, scratch, content) {
  writeFileSync(scratch, content, { flag: 'wx' });
  try {
    linkSync(scratch, path);
    return statSync(scratch).ino;
  } catch (e) {
    if (e.code === 'EEXIST') return null;
    if (!NO_LINKS.has(e.code)) throw e;
  } finally {
    unlinkSync(scratch);
  }
  let fd;
  try {
    fd = openSync(path, 'wx');
  } catch (e) {
    if (e.code === 'EEXIST') return null;
    throw e;
  }
  try {
    writeSync(fd, content);
    fsyncSync(fd);
    return fstatSync(fd).ino;
  } finally {
    closeSync(fd);
  }
}

class FileEngine extends Engine {
  constructor(path, retention) {
    super(retention);
    this.path = path;
    this.lockPath = `${path}.lock`;
    /** Compaction waits until the log passes this (after a failed one). */
    this.compactAt = 0;
    this.takeLock();
    try {
      this.load();
    } catch (e) {
      this.dropLock();
      throw e;
    }
  }

  /**
   * One opener at a time. PATH.lock names the holder (see `alive`); it is
   * created only where none exists (`createExclusive`), so of racing
   * openers one wins. A lock whose holder is gone is removed only under
   * PATH.lock.takeover, a second lock made the same way, after checking
   * again that it is the same file, still stale: no two openers can take
   * over at once, and none can remove a lock that is in use. A worker
   * thread of this process finds the lock held by its process.
   */
  takeLock() {
    this.sweepScratch();
    const scratch = `${this.lockPath}.${process.pid}.${randomBytes(6).toString('hex')}`;
    const fail = (e) => unavailable(`cannot lock ${this.path}: ${e.message}`);
    for (let attempt = 0; attempt < 50; attempt++) {
      let ino;
      try {
        ino = createExclusive(this.lockPath, scratch, `${SELF}\n`);
      } catch (e) {
        throw fail(e);
      }
      if (ino !== null) {
        this.lockIno = ino;
        this.heartbeat = setInterval(() => {
          try {
            const now = new Date();
            utimesSync(this.lockPath, now, now);
          } catch {
            // The next beat tries again.
          }
        }, HEARTBEAT_MS);
        this.heartbeat.unref();
        return;
      }
      const held = this.lockHolder();
      if (held === undefined) continue;
      if (alive(held.owner, held.mtimeMs)) {
        const pid = held.owner.trim().split(' ')[0];
        const who =
          pid === String(process.pid) && held.owner.trim() === SELF.trim()
            ? 'this process (another worker thread, or another path to the file)'
            : `process ${pid || '(being written)'}`;
        throw unavailable(`${this.path} is in use by ${who}`);
      }
      // Stale: remove it, under the takeover lock.
      const takeover = `${this.lockPath}.takeover`;
      let mine;
      try {
        mine = createExclusive(takeover, scratch, `${SELF}\n`);
      } catch (e) {
        throw fail(e);
      }
      if (mine === null) {
        // Another opener is taking over, or one died doing it.
        try {
          const t = statSync(takeover);
          if (!alive(readFileSync(takeover, 'latin1'), t.mtimeMs) && statSync(takeover).ino === t.ino) {
            unlinkSync(takeover);
          }
        } catch {
          // Gone already.
        }
        sleepSync(5);
        continue;
      }
      try {
        const again = this.lockHolder();
        if (again !== undefined && again.ino === held.ino && !alive(again.owner, again.mtimeMs)) {
          unlinkSync(this.lockPath);
        }
      } finally {
        try {
          if (statSync(takeover).ino === mine) unlinkSync(takeover);
        } catch {
          // Gone already.
        }
      }
    }
    throw unavailable(`cannot lock ${this.path}: its lock file keeps changing`);
  }

  /**
   * Removes scratch files openers left beside the lock when they died
   * mid-open (`PATH.lock.PID.HEX`): a minute old, their pid gone.
   */
  sweepScratch() {
    const prefix = `${basename(this.lockPath)}.`;
    let names;
    try {
      names = readdirSync(dirname(this.lockPath));
    } catch {
      return;
    }
    for (const name of names) {
      const m = name.startsWith(prefix) ? /^(\d+)\.[0-9a-f]{12}$/.exec(name.slice(prefix.length)) : null;
      if (m === null) continue;
      const file = join(dirname(this.lockPath), name);
      try {
        if (Date.now() - statSync(file).mtimeMs > 60_000 && !alive(m[1], Date.now())) unlinkSync(file);
      } catch {
        // Gone already, or not ours to judge.
      }
    }
  }

  /** The lock file's holder text, inode and last refresh; undefined if none. */
  lockHolder() {
    try {
      const st = statSync(this.lockPath);
      return { owner: readFileSync(this.lockPath, 'latin1'), ino: st.ino, mtimeMs: st.mtimeMs };
    } catch (e) {
      if (e.code === 'ENOENT') return undefined;
      throw unavailable(`cannot read ${this.lockPath}: ${e.message}`);
    }
  }

  dropLock() {
    clearInterval(this.heartbeat);
    try {
      // Only our own lock: never one another opener took over.
      if (statSync(this.lockPath).ino === this.lockIno) unlinkSync(this.lockPath);
    } catch {
      // Already gone.
    }
  }

  load() {
    let data;
    try {
      if (existsSync(this.path) && statSync(this.path).size > MAX_LOG_BYTES) {
        throw new Error(`the log is over ${MAX_LOG_BYTES} bytes, more than this package reads`);
      }
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
      // A torn last record: the commit it held never returned. Keep its
      // bytes (unless they are only zeros) for whoever wants to look.
      const cut = data.subarray(at);
      if (cut.some((b) => b !== 0)) {
        try {
          writeFileSync(`${this.path}.torn-${Date.now()}`, cut, { flag: 'wx' });
        } catch {
          // Evidence only: the log is right without it.
        }
      }
      ftruncateSync(this.fd, at);
      fsyncSync(this.fd);
    }
    this.size = at;
    // Trim the replayed feed to the retention now, not at the next commit.
    const cut = this.version - this.retention;
    const keep = this.log.findIndex((c) => c.version > cut);
    this.log = keep < 0 ? [] : this.log.slice(keep);
    this.logStart = 0;
    this.logBytes = this.log.reduce((n, c) => n + changeBytes(c), 0);
  }

  /** Applies the record at `at`; its end, or undefined if it is the torn tail. */
  replay(data, at) {
    const damaged = (what) => corrupt(`${this.path} is damaged at byte ${at} (${what}); nothing was changed`);
    // Bad at `at`: the torn tail, unless a sound record follows `from`.
    const bad = (from, what) => {
      if (soundRecordAfter(data, from)) throw damaged(what);
      return undefined;
    };
    if (at + HEADER > data.length) return undefined;
    if (!soundHeader(data, at)) return bad(at + 1, 'bad record header');
    const end = at + HEADER + data.readUInt32LE(at);
    // A sound header whose record runs past the end: cut short by a crash.
    if (end > data.length) return undefined;
    const payload = data.subarray(at + HEADER, end);
    if (crc32(payload) !== data.readUInt32LE(at + 4)) return bad(end, 'bad checksum');
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
        this.logStart = 0;
        this.logBytes = 0;
        for (let i = 0; i < n; i++) {
          const key = str(r.bytes());
          const v = r.u64();
          this.table.put(key, r.bytes(), v);
        }
        this.version = version;
        this.floor = r.u64();
        const m = r.u32();
        for (let i = 0; i < m; i++) {
          const v = r.u64();
          const key = str(r.bytes());
          const value = r.u8() ? r.bytes() : undefined;
          this.log.push({ version: v, key, value });
          this.logBytes += changeBytes(this.log.at(-1));
        }
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
    if (this.size + record.length > MAX_LOG_BYTES && !(this.compact() && this.size + record.length <= MAX_LOG_BYTES)) {
      throw unavailable(`${this.path}: the log would pass ${MAX_LOG_BYTES} bytes, more than this package can reopen`);
    }
    try {
      writeAll(this.fd, record, this.size);
      fdatasyncSync(this.fd);
    } catch (e) {
      // The commit fails, so no part of it may stay: cut the log back to
      // its last acknowledged record. If even that fails, refuse further
      // writes; the next open cuts the torn tail.
      try {
        ftruncateSync(this.fd, this.size);
        fdatasyncSync(this.fd);
      } catch {
        this.broken = true;
      }
      throw unavailable(`writing ${this.path}: ${e.message}`);
    }
    this.size += record.length;
  }

  commit(checks, writes) {
    const version = super.commit(checks, writes);
    // A snapshot holds the records and the retained feed: compact when
    // the log is twice that (and past a floor), so a snapshot always
    // leaves room before the next one.
    const snapshot = this.table.bytes + 24 * this.table.keys.length + this.logBytes;
    if (this.size > COMPACT_MIN_BYTES && this.size > 2 * snapshot && this.size > this.compactAt) {
      // After a failure, wait for the log to grow by another snapshot.
      if (!this.compact()) this.compactAt = this.size + snapshot;
    }
    return version;
  }

  /**
   * Rewrites the log as one snapshot: written aside, synced, renamed over
   * the log, the directory synced. The aside file's descriptor becomes the
   * log's, so nothing is opened after the rename. On any failure before
   * the rename the old log stays as it was, and compaction is tried
   * again once the log has grown by another snapshot. Whether it
   * compacted.
   */
  compact() {
    const aside = `${this.path}.compact`;
    let fd;
    let size;
    try {
      const cut = this.version - this.retention;
      const floor = cut > this.floor ? cut : this.floor;
      const feed = this.log.slice(this.logStart).filter((c) => c.version > floor);
      const out = new Writer(this.table.bytes + 24 * this.table.keys.length + this.logBytes + 64);
      out.u8(SNAPSHOT);
      out.u64(this.version);
      out.u32(this.table.keys.length);
      for (const key of this.table.keys) {
        const r = this.table.records.get(key);
        out.bytes(bytes(key));
        out.u64(r.version);
        out.bytes(r.value);
      }
      out.u64(floor);
      out.u32(feed.length);
      for (const c of feed) {
        out.u64(c.version);
        out.bytes(bytes(c.key));
        if (c.value === undefined) out.u8(0);
        else {
          out.u8(1);
          out.bytes(c.value);
        }
      }
      const record = out.record();
      fd = openSync(aside, 'w+');
      writeAll(fd, MAGIC, 0);
      writeAll(fd, record, MAGIC.length);
      fsyncSync(fd);
      size = MAGIC.length + record.length;
      renameSync(aside, this.path);
    } catch {
      if (fd !== undefined) closeSync(fd);
      try {
        unlinkSync(aside);
      } catch {
        // Never made.
      }
      return false;
    }
    // The snapshot is the log now, whatever closing the old one says.
    const old = this.fd;
    this.fd = fd;
    this.size = size;
    this.compactAt = 0;
    try {
      closeSync(old);
    } catch {
      // Its data was superseded by the snapshot.
    }
    this.syncDirectory();
    return true;
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
  if (!Number.isSafeInteger(retention) || retention < 0) {
    throw invalid(`retention must be an integer >= 0, not ${JSON.stringify(config.retention)}`);
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
  // One engine per file, however it is named: the real path of its
  // directory (made if missing, as the Rust file backend does).
  let path;
  try {
    const given = resolve(config.path);
    mkdirSync(dirname(given), { recursive: true });
    // Made first, so a symlink to a file not there yet names its target.
    closeSync(openSync(given, 'a'));
    path = realpathSync(given);
  } catch (e) {
    throw unavailable(`cannot open ${config.path}: ${e.message}`);
  }
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
 * The `backend` resource class for one store's instance. `engines` maps
 * each configuration the store opened to its engine, and outlives the
 * instance: a store restarted after a trap finds its memory data and
 * keeps its file open. Every method answers with a value or throws a
 * `storage-error` variant; any other failure (a bug here) becomes
 * `unavailable`, never a trap.
 */
export function backendClass(engines) {
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
    let engine = engines.get(config);
    if (engine === undefined) {
      engine = openEngine(config);
      engines.set(config, engine);
    }
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
    // Every instance of this process shares the engine, whose version
    // moves with each commit: what a cache in one instance compares to
    // see another's writes. It cannot fail (the WIT function has no error).
    commitsHere() {
      try {
        return this.engine.currentVersion();
      } catch {
        return 0n;
      }
    },
  });
  return Backend;
}
