import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../src/cli/common.js';
import { checkTrainingMemory } from '../src/model/memory.js';
import { UsageError } from '../src/util/errors.js';
import { CLI, scratchDir, VERDICT } from './helpers.js';

const RUN = ['--config', 'tiny', '--max-steps', '2', '--workers', '1'];
const env = { ...process.env, VERDICT_PATH: VERDICT, GPT_DDP_DEBUG: '' };

/** Every path under `root` with its size and modification time: any change on disk shows. */
function tree(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: 'utf8' }).sort().map((p) => {
    const st = statSync(join(root, p));
    return st.isDirectory() ? `${p}/` : `${p} ${st.size} ${st.mtimeMs}`;
  });
}

function cli(args: string[], cwd: string) {
  return spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 120_000, env });
}

/** The command exits 2 with one `gpt-ddp: ` line matching `pattern`, no stack trace, and `root` as it was. */
function refuses(root: string, args: string[], pattern: RegExp): void {
  const before = tree(root);
  const r = cli(args, root);
  const what = args.join(' ');
  assert.equal(r.status, 2, `${what}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: ${r.stderr}`);
  assert.match(lines[0]!, /^gpt-ddp: /, what);
  assert.match(lines[0]!, pattern, what);
  assert.doesNotMatch(r.stderr, /^\s+at /m, what);
  assert.deepEqual(tree(root), before, `${what} changed the file system`);
}

function writeJson(path: string, value: unknown): string {
  writeFileSync(path, JSON.stringify(value));
  return path;
}

test('empty, bare and repeated flags are refused by name', () => {
  const root = scratchDir('flags');
  for (const flag of ['out', 'resume', 'init-from', 'data', 'config', 'token-file', 'tls-cert']) {
    refuses(root, ['train', ...(flag === 'config' ? RUN.slice(2) : RUN), `--${flag}`, ''], new RegExp(`--${flag} needs a value`));
  }
  refuses(root, ['evaluate', '--checkpoint', ''], /--checkpoint needs a value/);
  refuses(root, ['generate', '--checkpoint', join(root, 'x'), '--prompt', ''], /--prompt needs a value/);
  refuses(root, ['worker', '--connect', 'ws://127.0.0.1:1', '--token-file', ''], /--token-file needs a value/);
  refuses(root, ['report', join(root, 'run'), '--out', ''], /--out needs a value/);
  refuses(root, ['train', ...RUN, '--out'], /--out needs a value/);
  refuses(root, ['train', '--out', ...RUN], /--out needs a value/);
  refuses(root, ['train', ...RUN, '--out', 'a', '--out', 'b'], /--out is given more than once/);
  refuses(root, ['train', ...RUN, '--config', 'tiny'], /--config is given more than once/);
  refuses(root, ['train', ...RUN, '--backend', 'wasm', '--backend', 'wasm'], /--backend is given more than once/);
  refuses(root, ['compare', '--quick', '--max-steps', '2', '--out', 'a', '--out', 'b'], /--out is given more than once/);
  refuses(root, ['train', ...RUN, '--max-steps', '3'], /--max-steps is given more than once/);
});

test('bare or non-numeric numbers, timeouts beyond Node\'s timers, remote flags without --listen, a TLS pair that is none: refused', () => {
  const root = scratchDir('remote-flags');
  const listen = [...RUN.slice(0, 4), '--listen', '127.0.0.1:0'];
  refuses(root, ['train', ...RUN, '--max-steps'], /--max-steps needs a value/);
  refuses(root, ['train', ...listen, '--nodes', '--workers', '1'], /--nodes needs a value/);
  refuses(root, ['worker', '--connect', 'ws://127.0.0.1:1', '--token-file', join(root, 't'), '--threads'], /--threads needs a value/);
  refuses(root, ['train', ...RUN, '--seed', 'abc'], /--seed must be a non-negative integer, got something that is not a number/);
  refuses(root, ['train', ...listen, '--nodes', '1', '--wait-timeout', '1e12'], /--wait-timeout must be at most 2147483 seconds/);
  refuses(root, ['train', ...listen, '--nodes', '1', '--heartbeat-timeout', '1e6'], /--heartbeat-timeout must be at most 715827 seconds/);
  for (const flag of ['wait-timeout', 'heartbeat-timeout', 'checksum-every']) refuses(root, ['train', ...RUN, `--${flag}`, '5'], new RegExp(`--${flag} needs --listen`));
  const notPem = writeJson(join(root, '..', 'not.pem'), {});
  refuses(root, ['train', ...listen, '--nodes', '1', '--tls-cert', notPem, '--tls-key', notPem], /--tls-cert .* and --tls-key .* are not a PEM certificate and its private key/);
});

test('a --listen port that is taken: one line naming it, exit 2, and no token left to block the corrected command', async () => {
  const root = scratchDir('listen-taken');
  const taken = createServer();
  await new Promise<void>((done) => taken.listen(0, '127.0.0.1', done));
  const { port } = taken.address() as AddressInfo;
  try {
    const out = join(root, 'run');
    const args = (addr: string) => ['train', '--config', 'tiny', '--max-steps', '1', '--workers', '1', '--listen', addr, '--out', out];
    const r = cli(args(`127.0.0.1:${port}`), root);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.trim(), new RegExp(`^gpt-ddp: --listen 127.0.0.1:${port}: port ${port} is in use [^\\n]*$`));
    assert.ok(!existsSync(join(out, 'token')), 'the token of a run that never started is removed');
    const again = cli(args('127.0.0.1:0'), root);
    assert.equal(again.status, 0, again.stderr);
  } finally {
    taken.close();
  }
});

test('worker counts that cannot be used are refused', () => {
  const root = scratchDir('workers');
  refuses(root, ['train', '--config', 'tiny', '--max-steps', '2', '--workers', '3'], /--workers 3 is more than the 2 samples of a step/);
  refuses(root, ['train', '--config', 'tiny', '--max-steps', '2', '--batch-size', '4', '--workers', '5'], /--workers 5 is more than the 4 samples/);
  refuses(root, ['train', '--config', 'tiny', '--max-steps', '2', '--workers', '1000'], /--workers 1000 is more than 256 threads/);
  refuses(root, ['worker', '--connect', 'ws://127.0.0.1:1', '--token-file', 't', '--threads', '300'], /--threads 300 is more than 256 threads/);
  refuses(root, ['evaluate', '--checkpoint', 'x', '--workers', '257'], /--workers 257 is more than 256 threads/);
  refuses(root, ['compare', '--quick', '--max-steps', '2', '--workers', '1,1000'], /--workers must be a comma-separated list of integers from 1 to 256/);
  refuses(root, ['compare', '--quick', '--max-steps', '2', '--workers', '1,3'], /--workers 3 is more than the 2 samples/);
});

test('output directories: files, foreign directories and runs are never written over', () => {
  const root = scratchDir('outdirs');
  const file = join(root, 'file.txt');
  writeFileSync(file, 'mine');
  const foreign = join(root, 'foreign');
  mkdirSync(join(foreign, 'workers-1'), { recursive: true });
  writeFileSync(join(foreign, 'keep.txt'), 'mine');
  writeFileSync(join(foreign, 'workers-1', 'keep.txt'), 'mine');
  const clashing = join(root, 'clashing');
  mkdirSync(clashing);
  writeFileSync(join(clashing, 'config.json'), 'mine');

  refuses(root, ['train', ...RUN, '--out', file], /--out .*file.txt is a file, not a directory/);
  refuses(root, ['train', ...RUN, '--out', join(file, 'run')], /lies under .*file.txt, which is a file/);
  refuses(root, ['train', ...RUN, '--out', foreign], /--out .*foreign is not empty and holds no gpt-ddp run; pass --force/);
  refuses(root, ['train', ...RUN, '--out', clashing, '--force'], /already has a config.json that gpt-ddp did not write/);
  refuses(root, ['compare', '--quick', '--workers', '1', '--out', file], /is a file, not a directory/);
  refuses(root, ['compare', '--quick', '--workers', '2', '--out', foreign], /--out .*foreign is not empty and holds no gpt-ddp comparison; pass --force/);
  refuses(root, ['compare', '--quick', '--workers', '1', '--out', foreign, '--force'], /workers-1 exists but was not made by compare/);
  refuses(root, ['compare', '--quick', '--workers', '1', '--data', join(root, 'missing.txt'), '--out', join(root, 'cmp')], /cannot read data file/);

  const forced = cli(['train', ...RUN, '--out', foreign, '--force'], root);
  assert.equal(forced.status, 0, forced.stderr);
  assert.equal(readFileSync(join(foreign, 'keep.txt'), 'utf8'), 'mine');
  assert.ok(existsSync(join(foreign, 'summary.json')));
  refuses(root, ['train', ...RUN, '--out', foreign, '--force'], /already holds a run; continue it with --resume/);
});

const SYS_DIR = '/sys/gpt-ddp-test';

/** Directories this process cannot write in: a locked one, or where even root cannot (sysfs). */
function unwritable(root: string): { paths: string[]; unlock: () => void } {
  if (process.getuid?.() === 0) return { paths: [SYS_DIR, join(SYS_DIR, 'a', 'b')], unlock: () => {} };
  const locked = join(root, 'locked');
  mkdirSync(locked);
  chmodSync(locked, 0o555);
  return { paths: [locked, join(locked, 'a', 'b')], unlock: () => chmodSync(locked, 0o755) };
}

test('an output directory that cannot be written is refused before any worker starts', () => {
  const root = scratchDir('readonly');
  const { paths, unlock } = unwritable(root);
  try {
    for (const out of paths) {
      refuses(root, ['train', ...RUN, '--out', out], /--out .* is not writable \((EACCES|EPERM|EROFS)\)/);
      refuses(root, ['compare', '--quick', '--max-steps', '2', '--workers', '1', '--out', out], /is not writable/);
    }
    assert.equal(existsSync(SYS_DIR), false);
  } finally {
    unlock();
  }
});

test('the default output directory runs/<timestamp> still works', () => {
  const root = scratchDir('default');
  const r = cli(['train', ...RUN], root);
  assert.equal(r.status, 0, r.stderr);
  const [run] = readdirSync(join(root, 'runs'));
  assert.ok(existsSync(join(root, 'runs', run!, 'summary.json')), run);
});

test('configs with a small vocabulary or a model too big for memory are refused up front', () => {
  const root = scratchDir('configs');
  const tiny = loadConfig('tiny');
  const small = writeJson(join(root, 'small.json'), { ...tiny, model: { ...tiny.model, vocabSize: 1000 } });
  refuses(root, ['train', '--config', small], /model.vocabSize \(1000\) is smaller than the GPT-2 tokenizer's 50257 tokens/);
  refuses(root, ['inspect', '--config', small], /smaller than the GPT-2 tokenizer's/);
  const huge = { ...tiny, model: { ...tiny.model, embDim: 8192, nHeads: 64, nLayers: 48 } };
  refuses(root, ['train', '--config', writeJson(join(root, 'huge.json'), huge), '--workers', '1'], /the model would need about \d+\.\d GiB of memory .* but this machine has/);
  refuses(root, ['compare', '--config', join(root, 'huge.json'), '--workers', '1'], /would need about \d+\.\d GiB/);

  assert.doesNotThrow(() => checkTrainingMemory(loadConfig('gpt2-124m-verdict'), 2, 'wasm'));
  assert.throws(() => checkTrainingMemory(huge, 2, 'wasm'), (e: Error) => e instanceof UsageError && /GiB/.test(e.message));
  // About 5 GiB, mostly the logits of 12 x 1024 tokens: within a machine's memory, beyond a wasm heap.
  const longContext = { ...tiny, model: { ...tiny.model, contextLength: 1024 }, training: { ...tiny.training, batchSize: 12 } };
  assert.throws(() => checkTrainingMemory(longContext, 1, 'wasm'), /more than the 4\.0 GiB a wasm thread can address/);
  assert.doesNotThrow(() => checkTrainingMemory(longContext, 1, 'tensorflow'));
  // compare checks every worker count: one thread's heap is largest with the fewest workers.
  refuses(root, ['compare', '--config', writeJson(join(root, 'long.json'), longContext), '--workers', '12,1', '--backend', 'wasm'], /more than the 4\.0 GiB a wasm thread/);
});

test('report checks every run directory before writing anything', () => {
  const root = scratchDir('report');
  const run = (name: string, files: Record<string, string>) => {
    mkdirSync(join(root, name));
    for (const [f, text] of Object.entries(files)) writeFileSync(join(root, name, f), text);
    return join(root, name);
  };
  const summary = JSON.stringify({ config: 'tiny', parameters: 1, backend: 'wasm', workers: 1, steps: 1, totalSec: 1, interrupted: false });
  const good = run('good', { 'summary.json': summary, 'metrics.jsonl': '{"type":"step","step":0}\n' });
  const out = join(root, 'out');
  refuses(root, ['report', good, join(root, 'missing'), '--out', out], /missing is not a run directory/);
  refuses(root, ['report', good, run('nometrics', { 'summary.json': summary }), '--out', out], /nometrics is not a finished run: it has no metrics.jsonl/);
  refuses(root, ['report', good, run('empty', { 'summary.json': summary, 'metrics.jsonl': '' }), '--out', out], /empty.metrics.jsonl holds no step record/);
  refuses(root, ['report', run('torn', { 'summary.json': summary, 'metrics.jsonl': '{"type":"st' }), '--out', out], /torn.metrics.jsonl line 1 is not valid JSON/);
  refuses(root, ['report', run('nosummary', { 'metrics.jsonl': '{"type":"step"}\n' }), good, '--out', out], /nosummary is not a finished run: it has no summary.json/);
  refuses(root, ['report', run('oldsummary', { 'summary.json': '{"config":"tiny"}', 'metrics.jsonl': '{"type":"step"}\n' }), '--out', out],
    /oldsummary.summary.json: "parameters" is missing or not a number/);
  const file = join(root, 'file.txt');
  writeFileSync(file, 'mine');
  refuses(root, ['report', good, '--out', file], /--out .*file.txt is a file, not a directory/);
});

test('a closed stdout (`train | head -1`) neither kills the run nor loses its checkpoint', async () => {
  const out = join(scratchDir('pipe'), 'run');
  const child = spawn(process.execPath, [CLI, 'train', '--config', 'tiny', '--max-steps', '30', '--workers', '1', '--out', out], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|^\s+at /m);
  for (const f of ['trainer.json', 'summary.json']) assert.ok(existsSync(join(out, f)), f);
  assert.equal((JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as { steps: number }).steps, 30);
});

test('Ctrl-C during compare stops the whole comparison: no later run, no report, exit 130', async () => {
  const root = scratchDir('cmp-sigint');
  const out = join(root, 'cmp');
  const child = spawn(process.execPath, [CLI, 'compare', '--quick', '--workers', '1,2', '--max-steps', '30', '--out', out], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let interrupted = false;
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    // The first evaluation: the first run is training.
    if (!interrupted && /\[run 1\/2, 1 worker\] Ep 1 \(Step 000000\)/.test(stdout)) interrupted = child.kill('SIGINT');
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 130, `${stdout}\n${stderr}`);
  assert.match(stderr.trim(), /^gpt-ddp: stopped during \[run 1\/2, 1 worker\]; its checkpoint is in .*workers-1/);
  assert.equal(stderr.trim().split('\n').length, 1, stderr);
  assert.doesNotMatch(stdout, /\[run 2\/2/);
  assert.equal(existsSync(join(out, 'workers-2')), false, 'the second run never started');
  assert.deepEqual(readdirSync(out).filter((f) => /^(compare\.json|report\.|loss-vs|step-breakdown)/.test(f)), [], 'no report');
  const summary = JSON.parse(readFileSync(join(out, 'workers-1', 'summary.json'), 'utf8')) as { interrupted: boolean };
  assert.equal(summary.interrupted, true);
  assert.ok(existsSync(join(out, 'workers-1', 'trainer.json')), 'the interrupted run keeps its checkpoint');
  const report = cli(['report', join(out, 'workers-1'), '--out', join(root, 'report')], root);
  assert.equal(report.status, 0, report.stderr);
  assert.match(readFileSync(join(root, 'report', 'report.md'), 'utf8'), /\| 1 worker, interrupted at step \d+ \|/);
});

test('Ctrl-C while the coordinator waits for nodes: exit 130, one line saying no step was taken and how to start again', async () => {
  const root = scratchDir('listen-sigint');
  const out = join(root, 'run');
  const child = spawn(process.execPath, [CLI, 'train', '--config', 'tiny', '--listen', '127.0.0.1:0', '--nodes', '1', '--out', out], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout.on('data', (d: Buffer) => {
    const waiting = !/waiting for 1 node/.test(stdout);
    stdout += d.toString();
    if (waiting && /waiting for 1 node/.test(stdout)) child.kill('SIGINT');
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 130, `${stdout}\n${stderr}`);
  assert.match(stdout, /stopping before the first step/);
  assert.doesNotMatch(stdout, /saving a checkpoint/);
  assert.match(stderr.trim(), new RegExp(`^gpt-ddp: stopped before the first step; nothing to resume: start again with --out ${out} --force, or another --out$`));
});
