// Transpiles the kvstash component into gen/ with jco: an ES module whose
// `instantiate(getCoreModule, imports)` the package calls once per open
// store, giving it that store's storage.
//
// The component comes from KVSTASH_WASM, or from the workspace's guest
// build (built here with cargo if it is missing).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transpile } from '@bytecodealliance/jco-transpile';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const workspace = resolve(pkg, '../..');
const built = join(workspace, 'target/guest/wasm32-wasip2/guest/kvstash_guest.wasm');

let wasm = process.env.KVSTASH_WASM;
if (!wasm) {
  wasm = built;
  if (!existsSync(wasm)) {
    console.error('building the kvstash guest component with cargo');
    execFileSync(
      'cargo',
      ['build', '-p', 'kvstash-guest', '--target', 'wasm32-wasip2', '--profile', 'guest',
        '--target-dir', join(workspace, 'target/guest')],
      { cwd: workspace, stdio: 'inherit' },
    );
  }
}

const out = join(pkg, 'gen');
const { files } = await transpile(wasm, {
  name: 'kvstash',
  instantiation: 'async',
  outDir: out,
  // Errors the component returns are thrown as their WIT variant
  // ({ tag, val }); src/errors.js turns them into KvstashError classes.
  noComponentErrorWrapping: true,
  // The package's own index.d.ts is the public type surface.
  emitTypescriptDeclarations: false,
});
rmSync(out, { recursive: true, force: true });
for (const [path, bytes] of Object.entries(files)) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, bytes);
}
console.error(`transpiled ${wasm} into ${out}: ${Object.keys(files).length} files`);
