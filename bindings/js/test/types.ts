// Compiled with `tsc --noEmit` (test/tsconfig.json) by the package's cargo
// test: the hand-written types accept the documented API and reject misuse.
import * as kvstash from '../src/index.js';

export async function typed(): Promise<void> {
  const store: kvstash.Store = await kvstash.open({ type: 'file', path: 'x.kvlog' }, { sweepInterval: 0 });
  await kvstash.open('{"type": "memory"}');
  const b = store.bucket('devices');
  const v: number = await b.set('k', { a: [1, 2], n: null }, { ifVersion: 3, ttl: 1000 });
  await b.set('raw', new Uint8Array([1]), { ifAbsent: true });
  const e = await b.get<{ a: number[] }>('k');
  if (e !== null) {
    const first: number = e.value.a[0];
    const at: number | undefined = e.expiresAt?.getTime();
    console.log(first, at, e.version + 1);
  }
  const page: kvstash.Page = await b.list({ prefix: 'k', limit: 10, reverse: true });
  for (const item of page.items) console.log(item.key, item.version);
  if (page.cursor !== null) await b.list({ cursor: page.cursor });
  for await (const item of b.entries({ prefix: 'k' })) console.log(item.key);
  for await (const event of b.watch({ since: v, signal: AbortSignal.timeout(10) })) {
    const kind: 'set' | 'delete' | 'expire' = event.kind;
    console.log(kind);
  }
  const doc = await b.getPath<string>('k', '/name');
  if (doc !== null) console.log(doc.value.toUpperCase());
  await b.setPath('k', '/n', 1);
  const version: number = await store
    .transaction()
    .checkVersion('devices', 'k', v)
    .checkAbsent('devices', 'new')
    .set('devices', 'new', [1, 5, 42], { ttl: 60_000 })
    .increment('stats', 'n', 2)
    .appendPath('devices', 'k', '/a', 3)
    .commit();
  const lease: kvstash.Lease = await store.lock('leader', { ttl: 1000, wait: 100, owner: 'me' });
  await store.transaction().checkLease(lease).delete('devices', 'k').commit();
  await lease.renew(2000);
  const released: boolean = await lease.release();
  const holder = await store.lockStatus('leader');
  console.log(version, released, holder?.owner);
  try {
    await b.set('', 1);
  } catch (err) {
    if (err instanceof kvstash.ConflictError) console.log(err.current, err.index, err.code);
    if (err instanceof kvstash.LockedError) console.log(err.holder.token);
    if (err instanceof kvstash.CompactedError) console.log(err.oldest);
  }

  // @ts-expect-error: versions are numbers
  await b.set('k', 1, { ifVersion: '3' });
  // @ts-expect-error: undefined is not JSON
  await b.set('k', undefined);
  // @ts-expect-error: a file store needs a path
  await kvstash.open({ type: 'file' });
  // @ts-expect-error: lock needs a ttl
  await store.lock('leader', {});
  // @ts-expect-error: paths hold JSON, not bytes
  await b.setPath('k', '/x', new Uint8Array([1]));
  await store.close();
}
