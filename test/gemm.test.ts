import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The repository root: this file runs as dist/test/gemm.test.js. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface SweepResult {
  isa: string;
  cases: number;
  failures: number;
  hash: string;
}

function parseResult(line: string): SweepResult {
  const v: unknown = JSON.parse(line);
  assert.ok(typeof v === 'object' && v !== null, `not an object: ${line}`);
  const r = v as Record<string, unknown>;
  assert.ok(typeof r.isa === 'string' && typeof r.cases === 'number' && typeof r.failures === 'number' && typeof r.hash === 'string',
    `unexpected sweep line: ${line}`);
  return { isa: r.isa, cases: r.cases, failures: r.failures, hash: r.hash };
}

test('native gemm: every ISA matches a double reference, and avx512 and avx2 agree bit for bit', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gpt-ddp-gemm-'));
  try {
    const exe = join(dir, 'gemm-bench');
    const sources = ['native/gemm.c', 'native/gemm-rows.c', 'native/gemm-bench.c'].map((f) => join(ROOT, f));
    const cc = spawnSync('cc', ['-O3', '-ffp-contract=off', ...sources, '-lm', '-o', exe], { encoding: 'utf8', timeout: 60_000 });
    if ((cc.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
      t.skip('no C compiler (cc) on this machine');
      return;
    }
    assert.equal(cc.status, 0, `cc failed: ${cc.error?.message ?? ''}\n${cc.stderr}`);

    const run = spawnSync(exe, ['sweep'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(run.status, 0, `sweep failed (status ${run.status}):\n${run.stdout}${run.stderr}`);
    const results = run.stdout.trim().split('\n').map(parseResult);
    const isas = results.map((r) => r.isa);
    assert.ok(isas.includes('generic'), `the portable path must always run: ${isas.join(', ')}`);
    for (const r of results) {
      assert.equal(r.failures, 0, `${r.isa}: ${r.failures} failing cases`);
      assert.ok(r.cases >= 1000, `${r.isa}: only ${r.cases} cases`);
      assert.match(r.hash, /^[0-9a-f]{16}$/);
    }
    const avx512 = results.find((r) => r.isa === 'avx512');
    const avx2 = results.find((r) => r.isa === 'avx2');
    if (avx512 && avx2) assert.equal(avx512.hash, avx2.hash, 'avx512 and avx2 must give the same bits');
    else t.diagnostic(`only ${isas.join(', ')} on this CPU: the avx512/avx2 bit comparison did not run`);
  } finally {
    rmSync(dir, { recursive: true, force: true }); // CI disks are small
  }
});
