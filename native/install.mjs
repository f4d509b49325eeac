// npm's install script: builds the native addon unless the built one is newer than its sources.
// `npx gpt-ddp` in a clone links the package into npx's cache and runs this script again, in
// place; a rebuild there wiped a working addon first and, offline or without node-gyp's headers
// for that user, left none (the run fell back to wasm's matmul, 5x slower). `--force` rebuilds.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'gpt_ddp_kernels.node');
const sources = ['binding.gyp', 'native/kernels.c', 'native/matmul.c', 'native/gemm.c', 'native/gemm.h', 'native/napi-util.h'].map((f) => join(root, f));
const mtime = (path) => statSync(path).mtimeMs;

if (!process.argv.includes('--force') && existsSync(addon) && sources.every((s) => mtime(s) <= mtime(addon))) {
  console.log('gpt-ddp: the native addon is built and up to date');
  process.exit(0);
}
const gyp = spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (gyp.status !== 0) console.error('gpt-ddp: the native kernels did not build (see above); the JavaScript kernels will be used');
