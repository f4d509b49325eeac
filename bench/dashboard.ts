/**
 * bench:dashboard — what serving the live dashboard costs the training loop: the same run (default:
 * the 124M config, 2 workers, 8 steps) without a dashboard, then with one and a headless Debian
 * chromium following it, then without again; prints each run's median step and the ratio.
 * Usage: npm run bench:dashboard -- [--steps 8] [--workers 2] [--config C] [--data PATH]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Browser } from 'playwright-core';
import { runTrain } from '../src/cli/train.js';
import { launchChromium } from '../test/chromium.js';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '8' },
    workers: { type: 'string', default: '2' },
    config: { type: 'string', default: 'gpt2-124m-verdict' },
    data: { type: 'string' },
  },
});
const dir = mkdtempSync(join(tmpdir(), 'gpt-ddp-bench-dashboard-'));

/** Median step of one run; with a browser, it follows the run's dashboard for the whole run. */
async function medianStep(name: string, browser: Browser | null): Promise<number> {
  const out = join(dir, name);
  const page = browser ? await browser.newPage() : null;
  // The page opens once the run prints its dashboard's URL (on a free port).
  let opening: Promise<unknown> | null = null;
  const run = await runTrain({
    config: args.config, data: args.data, out, backend: 'auto', workers: Number(args.workers), maxSteps: Number(args.steps), evalIter: 1,
    ...(browser ? { dashboard: '0' } : {}),
  }, (line) => {
    const url = /^dashboard: (http:\/\/\S+\/)/.exec(line)?.[1];
    if (page && url) opening = page.goto(url);
    process.stderr.write(`  ${name}: ${line}\n`);
  });
  await opening;
  const shown = page ? Number(await page.evaluate('document.body.dataset.steps ?? 0')) : 0;
  await page?.close();
  rmSync(out, { recursive: true, force: true });
  if (browser) process.stderr.write(`  the page showed ${shown} of ${run.steps} steps\n`);
  return run.medianStepSec;
}

const browser = await launchChromium();
try {
  const before = await medianStep('without', null);
  const watched = await medianStep('with', browser);
  const after = await medianStep('without-again', null);
  const plain = (before + after) / 2;
  console.log(`\n## bench:dashboard — ${args.config}, ${args.workers} workers, median step of ${args.steps} steps\n`);
  console.log('| run | median step (s) |\n| --- | ---: |');
  console.log(`| without a dashboard | ${before.toFixed(3)} |\n| with the dashboard and a browser following it | ${watched.toFixed(3)} |\n| without, again | ${after.toFixed(3)} |`);
  console.log(`\nWith the dashboard: ${(((watched - plain) / plain) * 100).toFixed(2)}% against the mean of the runs without.`);
} finally {
  await browser.close();
  rmSync(dir, { recursive: true, force: true });
}
