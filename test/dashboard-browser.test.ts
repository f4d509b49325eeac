import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import type { Page } from 'playwright-core';
import type { EvalRecord } from '../src/coordinator/metrics.js';
import { dashboardUrl, evalsIn, exited, killAll, spawnCli } from './cluster-helpers.js';
import { CHROMIUM, launchChromium } from './chromium.js';
import { scratchDir } from './helpers.js';

afterEach(killAll);


/** The page's count of loss points, once it is at least `atLeast`. */
async function lossPoints(page: Page, atLeast: number): Promise<number> {
  // Expressions run in the page (this file is compiled without the DOM's types).
  await page.waitForFunction(`Number(document.body.dataset.lossPoints ?? 0) >= ${atLeast}`, undefined, { timeout: 60_000 });
  return Number(await page.evaluate('document.body.dataset.lossPoints'));
}

/** The train and val loss the runs table shows, per run. */
const shownLosses = (page: Page) => page.$$eval('#runs tr', (rows) => rows.slice(1).map((r) => [...r.querySelectorAll('td')].slice(-2).map((td) => td.textContent)));
const last3 = (e: EvalRecord) => [e.trainLoss.toFixed(3), e.valLoss.toFixed(3)];

test('the dashboard in a browser: the loss curve grows live, shows the logged values, overlays runs', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}` }, async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    const live = join(scratchDir('browser'), 'live');
    const run = spawnCli(['train', '--config', 'tiny', '--epochs', '3', '--eval-freq', '5', '--workers', '2', '--out', live, '--dashboard', '127.0.0.1:0']);
    await page.goto(await dashboardUrl(run));
    const first = await lossPoints(page, 2);
    const later = await lossPoints(page, first + 2);
    assert.ok(later > first, 'points were added while the run trained');
    await exited(run, 0);
    // The run's last evaluation, as metrics.jsonl has it, is what the page shows.
    const evals = evalsIn(live);
    assert.equal(await lossPoints(page, 2 * evals.length), 2 * evals.length);
    assert.deepEqual(await shownLosses(page), [last3(evals.at(-1)!)]);
    const worker = await page.$$eval('#workers tr', (rows) => rows.slice(1).map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent ?? '')));
    assert.equal(worker.length, 1);
    assert.equal(worker[0]![1], 'local threads');
    assert.match(worker[0]![2]!, /^2 thread\(s\), wasm, .+ optimizer$/, 'threads, backend and kernels of the local threads');
    assert.equal(worker[0]![3], 'working');
    assert.equal(worker[0]![4], '0, 1');

    const other = join(scratchDir('browser'), 'one-worker');
    await exited(spawnCli(['train', '--config', 'tiny', '--max-steps', '40', '--eval-freq', '5', '--workers', '1', '--out', other]), 0);
    const overlay = spawnCli(['dashboard', live, other, '--port', '0']);
    await page.goto(await dashboardUrl(overlay));
    const both = 2 * (evals.length + evalsIn(other).length);
    assert.equal(await lossPoints(page, both), both);
    assert.deepEqual(await shownLosses(page), [last3(evals.at(-1)!), last3(evalsIn(other).at(-1)!)]);
    const marks = await page.$$eval('#loss svg path', (paths) => paths.length);
    assert.ok(marks > 10, `the loss chart has ${marks} paths`);
    const shot = await page.screenshot({ fullPage: true });
    writeFileSync(join(scratchDir('browser'), 'dashboard.png'), shot);
    // A blank page compresses to a few kilobytes; charts and tables do not.
    assert.ok(shot.length > 40_000, `screenshot of ${shot.length} bytes looks blank`);
    overlay.child.kill('SIGINT');
    await exited(overlay, 0);
  } finally {
    await browser.close();
  }
});
