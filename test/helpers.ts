import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The shared copy of The Verdict next to the project (CI sets VERDICT_PATH to it too). */
export const VERDICT = process.env.VERDICT_PATH ?? fileURLToPath(new URL('../../../shared/data/the-verdict.txt', import.meta.url));
if (!existsSync(VERDICT)) throw new Error(`tests need The Verdict: set VERDICT_PATH (looked at ${VERDICT})`);

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
