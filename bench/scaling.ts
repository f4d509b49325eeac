/**
 * bench:scaling — median training-step time of a config (default: the 124M model, batch 2) with
 * 1 and 2 worker threads (or --workers 1,2,4), measured one after the other in this run, and the
 * speedup. Usage: npm run bench:scaling -- [--workers 1,2] [--steps 5] [--config C] [--data PATH]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runTrain } from '../src/cli/train.js';
import { median } from '../src/math/stats.js';

const { values: args } = parseArgs({
  options: {
    workers: { type: 'string', default: '1,2' },
    steps: { type: 'string', default: '5' },
    config: { type: 'string', default: 'gpt2-124m-verdict' },
    data: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
  },
});

const steps = Number(args.steps);
const dir = mkdtempSync(join(tmpdir(), 'gpt-ddp-scaling-'));
const rows: Array<{ workers: number; step: number; compute: number; reduce: number; optimizer: number; wait: number }> = [];
for (const workers of args.workers!.split(',').map(Number)) {
  process.stderr.write(`bench:scaling: ${workers} worker(s), ${steps} measured steps after 1 warm-up\n`);
  // One evaluation happens at step 0; keep it to one batch per split so it costs little.
  const run = await runTrain({
    config: args.config!, data: args.data, out: join(dir, `w${workers}`), backend: args.backend as 'auto', workers,
    maxSteps: steps + 1, evalFreq: 1_000_000, evalIter: 1,
  }, (line) => process.stderr.write(`  ${line}\n`));
  const records = run.metrics.of('step').slice(1);
  const med = (f: (r: (typeof records)[number]) => number) => median(records.map(f));
  rmSync(join(dir, `w${workers}`), { recursive: true, force: true }); // a 124M checkpoint is 2 GB
  rows.push({
    workers, step: med((r) => r.stepSec), compute: med((r) => r.computeSec), wait: med((r) => r.waitSec),
    reduce: med((r) => r.reduceSec), optimizer: med((r) => r.optimizerSec),
  });
}

const base = rows[0]!.step;
console.log(`\n## bench:scaling — ${args.config}, median of ${steps} steps after a warm-up step\n`);
console.log('| workers | step s | compute s | wait s | reduce s | optimizer s | speedup | efficiency |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  const speedup = base / r.step;
  console.log(`| ${r.workers} | ${r.step.toFixed(2)} | ${r.compute.toFixed(2)} | ${r.wait.toFixed(2)} | ${r.reduce.toFixed(2)} | ` +
    `${r.optimizer.toFixed(2)} | ${speedup.toFixed(2)}x | ${((100 * speedup) / (r.workers / rows[0]!.workers)).toFixed(0)}% |`);
}
rmSync(dir, { recursive: true, force: true });
