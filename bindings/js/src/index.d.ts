// Types for the kvstash package, written for people (jco's generated
// declarations name versioned interfaces with keys the runtime does not
// use; the package never exposes them).

/** Any value JSON.stringify accepts. Uint8Array values are stored as bytes. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** What a key holds: JSON (as JS values) or bytes. */
export type Value = Json | Uint8Array;

/** kvstash's options of any store (docs/semantics.md). */
export interface StoreOptions {
  /** Keep this store's keys under a prefix of the storage. */
  prefix?: string;
  /** Refuse every write with ReadOnlyError. */
  read_only?: boolean;
  /** How long a write retries races it lost before ContentionError (ms). */
  retry_deadline_ms?: number;
  /** Store names apps may open (wasi:keyvalue, Spin) and their buckets. */
  stores?: { [name: string]: string };
  /** How many commits the change feed keeps (default 10000). */
  retention?: number;
}

/** Storage configuration: an object or its JSON text. */
export type Config =
  | string
  | ({ type: 'memory' } & StoreOptions)
  | ({ type: 'file'; path: string } & StoreOptions);

export interface OpenOptions {
  /** Milliseconds between background sweeps of expired keys (default 60000; 0: never). */
  sweepInterval?: number;
}

/** Opens a store; a bad configuration or a file in use rejects here. */
export function open(config: Config, options?: OpenOptions): Promise<Store>;

export interface Entry<V = Value> {
  value: V;
  version: number;
  /** When the key expires (set with a ttl), or null. */
  expiresAt: Date | null;
}

export interface Item<V = Value> extends Entry<V> {
  key: string;
}

export interface Page<V = Value> {
  items: Item<V>[];
  /** Pass back as `cursor` for the next page; null when there is none. */
  cursor: string | null;
}

export interface ListOptions {
  prefix?: string;
  /** First key (inclusive). */
  start?: string;
  /** Last key (exclusive). */
  end?: string;
  limit?: number;
  cursor?: string | null;
  reverse?: boolean;
  /** Items carry `value: null`. */
  keysOnly?: boolean;
}

export interface SetOptions {
  /** Only if the key is at this version (else ConflictError). */
  ifVersion?: number;
  /** Only if the key is absent (else ConflictError). */
  ifAbsent?: boolean;
  /** Milliseconds to live. */
  ttl?: number;
}

export interface Event<V = Value> {
  version: number;
  key: string;
  kind: 'set' | 'delete' | 'expire';
  /** The value a `set` stored; null for the other kinds. */
  value: V | null;
  expiresAt: Date | null;
}

export interface WatchOptions {
  /** Events after this version; omitted: from the call on. */
  since?: number;
  prefix?: string;
  /** Ends the iteration when aborted. */
  signal?: AbortSignal;
}

export class Store {
  private constructor();
  /** A bucket: keys to values. Buckets need no creating. */
  bucket(name: string): Bucket;
  /** The names of the buckets that hold keys. */
  buckets(): Promise<string[]>;
  /** Chain checks and writes, then `await tx.commit()`. */
  transaction(): Transaction;
  /**
   * Takes the lock `name` for `ttl` ms; waits up to `wait` ms for another
   * holder to let go, then rejects with LockedError.
   */
  lock(name: string, options: { ttl: number; owner?: string; wait?: number }): Promise<Lease>;
  lockStatus(name: string): Promise<{ token: number; expiresAt: Date; owner: string | null } | null>;
  /** Removes up to `limit` expired keys now; how many it removed. */
  sweep(limit?: number): Promise<number>;
  /** Releases the store's files; later calls throw. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export class Bucket {
  private constructor();
  readonly name: string;
  get<V = Value>(key: string): Promise<Entry<V> | null>;
  /** Stores `value`; the new version. */
  set(key: string, value: Value, options?: SetOptions): Promise<number>;
  /** Whether the key existed. */
  delete(key: string): Promise<boolean>;
  exists(key: string): Promise<boolean>;
  /**
   * Adds `delta` (default 1) to the integer at `key` (absent: 0); the new
   * value. Integers beyond 2^53 lose precision as JS numbers.
   */
  increment(key: string, delta?: number): Promise<number>;
  list<V = Value>(options?: ListOptions): Promise<Page<V>>;
  /** Every item, following cursors. */
  entries<V = Value>(options?: Omit<ListOptions, 'cursor'>): AsyncGenerator<Item<V>>;
  /** The JSON at an RFC 6901 pointer; null if the key is absent, NotFoundError if the path is. */
  getPath<V = Json>(key: string, path: string): Promise<{ value: V; version: number } | null>;
  setPath(key: string, path: string, value: Json): Promise<number>;
  deletePath(key: string, path: string): Promise<number>;
  appendPath(key: string, path: string, value: Json): Promise<number>;
  /** Makes the bucket typed by a JSON Schema (null: untyped); the version. */
  setSchema(schema: { [key: string]: Json } | boolean | null, options?: { force?: boolean }): Promise<number>;
  schema(): Promise<{ schema: Json; version: number } | null>;
  /** Keeps the last `keep` changes for undo/redo (0: off). */
  setHistory(keep: number): Promise<void>;
  undo(): Promise<number>;
  redo(): Promise<number>;
  history(): Promise<{ undoable: number; redoable: number }>;
  /** The bucket's changes in version order: `for await (const event of bucket.watch())`. */
  watch<V = Value>(options?: WatchOptions): AsyncIterable<Event<V>>;
}

/**
 * Checks and writes committed together, or not at all. Methods chain;
 * `commit()` resolves to the transaction's version or rejects with
 * ConflictError (`index`: the check that failed).
 */
export class Transaction {
  private constructor();
  checkVersion(bucket: string, key: string, version: number): this;
  checkAbsent(bucket: string, key: string): this;
  checkExists(bucket: string, key: string): this;
  checkEquals(bucket: string, key: string, value: Value): this;
  /** Only while `lease` still holds its lock (fencing). */
  checkLease(lease: Lease): this;
  set(bucket: string, key: string, value: Value, options?: { ttl?: number }): this;
  delete(bucket: string, key: string): this;
  increment(bucket: string, key: string, delta?: number): this;
  setPath(bucket: string, key: string, path: string, value: Json): this;
  deletePath(bucket: string, key: string, path: string): this;
  appendPath(bucket: string, key: string, path: string, value: Json): this;
  commit(): Promise<number>;
}

/** A held lock. `token` is its fencing token. */
export class Lease {
  private constructor();
  readonly name: string;
  readonly token: number;
  readonly expiresAt: Date;
  /** Extends the lease to `ttl` ms from now; LeaseLostError if it lost the lock. */
  renew(ttl: number): Promise<void>;
  /** Whether this lease still held the lock. */
  release(): Promise<boolean>;
  [Symbol.asyncDispose](): Promise<void>;
}

export class KvstashError extends Error {
  /**
   * The error's kind, as the WIT interface names it: 'invalid-key',
   * 'conflict', 'check-failed', 'path-not-found', 'storage', …; 'trap'
   * when the component failed (the store replaces its instance).
   */
  readonly code: string;
}
/** Bad input: a key, bucket, value, path, cursor, argument, schema or configuration. */
export class InvalidError extends KvstashError {}
/** A condition did not hold; nothing was written. */
export class ConflictError extends KvstashError {
  /** The key's version when the condition failed; null if absent. */
  readonly current: number | null;
  /** In a transaction, the index of the check that failed. */
  readonly index: number | null;
}
export class NotFoundError extends KvstashError {}
export class ContentionError extends KvstashError {}
export class ReadOnlyError extends KvstashError {}
export class CompactedError extends KvstashError {
  /** The oldest version still retained. */
  readonly oldest: number;
}
/**
 * The storage failed or is unavailable (the file in use by another
 * process, an I/O error), or the component trapped (code 'trap'). Whether
 * the call's write happened is unknown: read before retrying a write that
 * is not idempotent.
 */
export class StorageError extends KvstashError {}
/** What the store's backend holds is damaged (a checksum failed); nothing was served or written. */
export class CorruptError extends StorageError {}
export class LockedError extends KvstashError {
  readonly holder: { token: number; expiresAt: Date; owner: string | null };
}
export class LeaseLostError extends KvstashError {}
