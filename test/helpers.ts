import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'node:test';
import { fileURLToPath } from 'node:url';
import { availableProviders } from '../src/model/provider.js';

/** The shared copy of The Verdict next to the project (CI sets VERDICT_PATH to it too). */
export const VERDICT = process.env.VERDICT_PATH ?? fileURLToPath(new URL('../../../shared/data/the-verdict.txt', import.meta.url));
if (!existsSync(VERDICT)) throw new Error(`tests need The Verdict: set VERDICT_PATH (looked at ${VERDICT})`);

const scratch: string[] = [];

function removeScratch(): void {
  for (const dir of scratch.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/**
 * A new temporary directory, removed after the current test: a tiny run's checkpoint is 38 MB and
 * CI machines can have little free disk.
 */
export function scratchDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `gpt-ddp-${name}-`));
  scratch.push(dir);
  return dir;
}

afterEach(removeScratch);
process.on('exit', removeScratch);

export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** max_i |a_i - b_i| / max_i |a_i|: the size of the difference relative to the values' scale. */
export function maxRelativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return diff / scale;
}


/** The matmul providers this machine can run. */
export const PROVIDERS = availableProviders();
