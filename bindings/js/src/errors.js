// kvstash's typed errors as JS Error classes. Every error the store
// returns is a KvstashError; `code` names its kind, and the subclasses
// group the kinds the way the Python and Rust APIs do.

export class KvstashError extends Error {
  constructor(message, code, details = {}) {
    super(message);
    this.name = new.target.name;
    /** The WIT error case, e.g. 'invalid-key', 'conflict', 'storage'. */
    this.code = code;
    Object.assign(this, details);
  }
}
/** Bad input: a key, bucket, value, path, cursor, argument or configuration. */
export class InvalidError extends KvstashError {}
/** A condition did not hold; nothing was written. `current`: the key's version. */
export class ConflictError extends KvstashError {}
/** The key, or the path in a document, does not exist. */
export class NotFoundError extends KvstashError {}
/** A write lost races with other writers until its retry deadline. */
export class ContentionError extends KvstashError {}
/** The store is read-only. */
export class ReadOnlyError extends KvstashError {}
/** Versions older than `oldest` are no longer retained. */
export class CompactedError extends KvstashError {}
/**
 * The storage failed or is unavailable, or the component trapped (code
 * 'trap'). Whether the call's write happened is unknown: read before
 * retrying a write that is not idempotent.
 */
export class StorageError extends KvstashError {}
/**
 * What the store's backend holds is damaged (a checksum failed); nothing
 * was served or written.
 */
export class CorruptError extends StorageError {}
/** The lock is held by another lease (`holder`). */
export class LockedError extends KvstashError {}
/** The lease no longer holds its lock. */
export class LeaseLostError extends KvstashError {}

const version = (v) => (v === undefined ? null : Number(v));

/** The error the component returned (a `{tag, val}` variant) as a KvstashError. */
export function fromWit(e) {
  if (!e || typeof e.tag !== 'string') {
    // A trap or a bug: the component instance is no longer usable.
    return new StorageError(`the kvstash component failed: ${e?.message ?? e}`, 'trap');
  }
  const { tag, val } = e;
  switch (tag) {
    case 'invalid-key':
      return new InvalidError(`invalid key: ${val}`, tag);
    case 'invalid-bucket':
      return new InvalidError(`invalid bucket name: ${val}`, tag);
    case 'invalid-value':
      return new InvalidError(`invalid value: ${val}`, tag);
    case 'invalid-cursor':
      return new InvalidError('invalid cursor', tag);
    case 'invalid-config':
      return new InvalidError(`invalid configuration: ${val}`, tag);
    case 'invalid-argument':
      return new InvalidError(`invalid argument: ${val}`, tag);
    case 'invalid-path':
      return new InvalidError(`invalid path: ${val}`, tag);
    case 'path-type-mismatch':
      return new InvalidError(`path type mismatch: ${val}`, tag);
    case 'not-json':
      return new InvalidError('the value is not JSON', tag);
    case 'schema-violation':
      return new InvalidError(`schema violation: ${val}`, tag);
    case 'conflict':
      return new ConflictError(
        `version conflict (current version: ${val === undefined ? 'absent' : val})`,
        tag,
        { current: version(val), index: null },
      );
    case 'check-failed':
      return new ConflictError(
        `transaction check ${val.index} failed (current version: ${val.current === undefined ? 'absent' : val.current})`,
        tag,
        { current: version(val.current), index: val.index },
      );
    case 'not-found':
      return new NotFoundError(`not found: ${val}`, tag);
    case 'path-not-found':
      return new NotFoundError(`path not found: ${val}`, tag);
    case 'read-only':
      return new ReadOnlyError('the store is read-only', tag);
    case 'contention':
      return new ContentionError('too much contention: the write kept losing races', tag);
    case 'compacted':
      return new CompactedError(`versions before ${val} are no longer retained`, tag, {
        oldest: Number(val),
      });
    case 'locked':
      return new LockedError(`the lock is held (token ${val.token})`, tag, {
        holder: {
          token: Number(val.token),
          expiresAt: new Date(Number(val.expiresAt)),
          owner: val.owner ?? null,
        },
      });
    case 'lease-lost':
      return new LeaseLostError(`lease lost: ${val}`, tag);
    case 'storage':
      return new StorageError(`storage failed: ${String(val).replace(/^(storage failed: )+/, '')}`, tag);
    case 'corrupt':
      return new CorruptError(String(val), tag);
    default:
      return new KvstashError(`${tag}: ${JSON.stringify(val)}`, tag);
  }
}
