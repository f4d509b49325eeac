// npm's install script: builds the native addon unless the built one is newer than its sources.
// `npx gpt-ddp` in a clone links the package into npx's cache and runs this script again, in
// place; a rebuild there wiped a working addon first and, offline or without node-gyp's headers
// for that user, left none (the run fell back to wasm's matmul, 5x slower). `--force` rebuilds.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'gpt_ddp_kernels.node');
// What the build reads: binding.gyp, the sources it names and the headers they include.
const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8'));
const headers = readdirSync(join(root, 'native')).filter((f) => f.endsWith('.h')).map((f) => `native/${f}`);
const sources = ['binding.gyp', ...gyp.targets[0].sources, ...headers].map((f) => join(root, f));
const mtime = (path) => statSync(path).mtimeMs;

if (!process.argv.includes('--force') && existsSync(addon) && sources.every((s) => mtime(s) <= mtime(addon))) {
  console.log('gpt-ddp: the native addon is built and up to date');
  process.exit(0);
}
const build = spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (build.status !== 0) console.error('gpt-ddp: the native kernels did not build (see above); the JavaScript kernels will be used');
