/** When bench:lan reads a run's counters: at the edges of its measured steps, seen in its metrics.jsonl. */
import { join } from 'node:path';
import { JsonlTail } from '../src/dashboard/tail.js';

/**
 * Marks the measured steps: a snapshot once step 0's evaluation record reaches metrics.jsonl (the
 * warm-up step and its evaluation are over), then one at each measured step's record (checked
 * every `everyMs`: a 124M step takes seconds). Returns the snapshots, or why they do not bound the
 * measured steps one by one: the run ended first, a snapshot failed, another record (an
 * evaluation, a sample, a member event) came between them, or the steps were too short to tell apart.
 */
export function markSteps<T>(runDir: string, steps: number, snapshot: () => T, everyMs = 5): () => T[] | string {
  const tail = new JsonlTail(join(runDir, 'metrics.jsonl'));
  const marks: T[] = [];
  let problem: string | null = null;
  const timer = setInterval(() => {
    try {
      const before = marks.length;
      // Complete lines only: a record still being written waits for the next poll.
      for (const { type } of tail.read().records) {
        if (problem !== null || marks.length > steps) break;
        if (marks.length === 0) {
          if (type === 'eval') marks.push(snapshot());
        } else if (type === 'step') {
          marks.push(snapshot());
        } else {
          problem = `a ${type} record came between the measured steps` +
            (type === 'sample' ? ' (an epoch ended: use fewer --steps than an epoch has)' : type === 'member' ? ' (a node joined, left or lost its slots)' : '');
        }
      }
      if (marks.length - before > 1) problem = `steps too short to mark one by one (several in one ${everyMs} ms poll): use a larger --config`;
    } catch (err) {
      problem = `marking the measured steps failed: ${(err as Error).message}`;
    }
    if (problem !== null || marks.length > steps) clearInterval(timer);
  }, everyMs);
  return () => {
    clearInterval(timer);
    return problem ?? (marks.length === steps + 1 ? marks : 'the run ended before its measured steps were seen');
  };
}
