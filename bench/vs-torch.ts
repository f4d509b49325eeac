/**
 * bench:vs-torch — the README's main job (the 124M config on The Verdict, evaluations and
 * samples included) for a fixed number of steps with 2 worker threads, next to the reference
 * PyTorch loop (bench/torch_train.py, the book's train_model_simple) on the same tokens, with 2
 * threads and with 1 (the faster is the reference). Prints both wall times, the loop times, the median steps and the ratios.
 * Usage: npm run bench:vs-torch -- [--steps 18] [--workers 2] [--config C] [--kernels K]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/cli/common.js';
import { splitText } from '../src/data/dataset.js';
import { encode } from '../src/data/tokenizer.js';
import { loadVerdict } from '../src/data/verdict.js';
import { median } from '../src/math/stats.js';
import { BENCH_DIR, PYTHON, torchAvailable } from './torch-env.js';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '18' },
    workers: { type: 'string', default: '2' },
    config: { type: 'string', default: 'gpt2-124m-verdict' },
    kernels: { type: 'string', default: 'auto' },
    data: { type: 'string' },
  },
});
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const steps = Number(args.steps);
const threads = Number(args.workers);

/** Runs a command to the end, its output passed through; the wall seconds. */
function timed(command: string, argv: string[]): Promise<number> {
  const t0 = performance.now();
  // Their output goes to stderr: stdout carries only this benchmark's table.
  const child = spawn(command, argv, { stdio: ['ignore', process.stderr, 'inherit'] });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve((performance.now() - t0) / 1000) : reject(new Error(`${command} exited with ${code}`))));
  });
}

const torch = torchAvailable();
if (!torch.ok) {
  console.log(`bench:vs-torch: PyTorch ${torch.detail}`);
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), 'gpt-ddp-vs-torch-'));
try {
  const config = loadConfig(args.config!);
  const source = await loadVerdict(args.data);
  const split = splitText(source.text, config.training.trainRatio, config.model.contextLength);
  // The same token ids on both sides: train then val, split where val starts.
  writeFileSync(join(dir, 'tokens.json'), JSON.stringify([...split.trainTokens, ...split.valTokens]));

  console.error(`\n# gpt-ddp: ${threads} workers, ${steps} steps`);
  const out = join(dir, 'ours');
  const oursWall = await timed(process.execPath, [CLI, 'train', '--config', args.config!, ...(args.data ? ['--data', args.data] : []), '--workers', String(threads),
    '--max-steps', String(steps), '--kernels', args.kernels!, '--out', out]);
  const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as { totalSec: number; medianStepSec: number; members: Array<{ kernels: string }> };

  // PyTorch on the same cores: one process with `threads` threads, and with 1 (Debian's OpenBLAS
  // build scales poorly here); the faster is the reference.
  const torchRuns: Array<{ threads: number; wall: number; seconds: number; step: number; torch: string }> = [];
  for (const t of [...new Set([threads, 1])]) {
    console.error(`\n# PyTorch: ${t} thread${t === 1 ? '' : 's'}, ${steps} steps`);
    const torchOut = join(dir, `torch-${t}.json`);
    const wall = await timed(PYTHON, [join(BENCH_DIR, 'torch_train.py'), '--config', args.config!, '--tokens', join(dir, 'tokens.json'),
      '--split-token', String(split.trainTokens.length), '--start-tokens', JSON.stringify(encode(config.training.startContext)),
      '--threads', String(t), '--steps', String(steps), '--out', torchOut]);
    const r = JSON.parse(readFileSync(torchOut, 'utf8')) as { seconds: number; stepSeconds: number[]; torch: string };
    torchRuns.push({ threads: t, wall, seconds: r.seconds, step: median(r.stepSeconds), torch: r.torch });
  }
  const best = torchRuns.reduce((a, b) => (b.wall < a.wall ? b : a));

  console.log(`\n## bench:vs-torch — ${args.config}, ${steps} steps: gpt-ddp with ${threads} workers vs PyTorch ${best.torch}`);
  console.log(`gpt-ddp kernels: ${summary.members[0]?.kernels ?? '?'}\n`);
  console.log(`| time (s) | gpt-ddp | ${torchRuns.map((r) => `PyTorch, ${r.threads} thread${r.threads === 1 ? '' : 's'}`).join(' | ')} | ratio to the faster PyTorch |`);
  console.log(`| --- | ---: |${' ---: |'.repeat(torchRuns.length)} ---: |`);
  const rows: Array<[string, number, (r: (typeof torchRuns)[number]) => number]> = [
    ['whole command (start-up included)', oursWall, (r) => r.wall],
    ['training loop (evaluations and samples included)', summary.totalSec, (r) => r.seconds],
    ['median step', summary.medianStepSec, (r) => r.step],
  ];
  for (const [what, ours, of] of rows) {
    console.log(`| ${what} | ${ours.toFixed(2)} | ${torchRuns.map((r) => of(r).toFixed(2)).join(' | ')} | **${(ours / of(best)).toFixed(2)}x** |`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
