import { UsageError } from '../util/errors.js';

/** yargs `coerce` checks: a bad value becomes one clear usage error (exit code 2). */
function check(name: string, ok: (v: number) => boolean, expected: string) {
  return (v: number | undefined) => {
    if (Array.isArray(v)) throw new UsageError(`--${name} is given more than once`);
    // yargs turns text that is not a number into NaN and drops the text.
    if (v !== undefined && !ok(v)) throw new UsageError(`--${name} must be ${expected}, got ${Number.isNaN(v) ? 'something that is not a number' : v}`);
    return v;
  };
}

export const positiveInt = (name: string) => check(name, (v) => Number.isInteger(v) && v >= 1, 'a positive integer');
export const nonNegativeInt = (name: string) => check(name, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
export const positiveNumber = (name: string) => check(name, (v) => Number.isFinite(v) && v > 0, 'a positive number');
export const nonNegativeNumber = (name: string) => check(name, (v) => Number.isFinite(v) && v >= 0, 'a non-negative number');

/** The longest timer Node runs: a longer one fires at once (TimeoutOverflowWarning). */
const MAX_TIMER_SEC = Math.floor((2 ** 31 - 1) / 1000);

/**
 * A timeout in seconds (positive) that becomes a timer of up to `timers` times its length, so it
 * must fit Node's longest timer (about 24.8 days in all).
 */
export function timeoutSeconds(name: string, timers = 1) {
  const base = positiveNumber(name);
  const max = Math.floor(MAX_TIMER_SEC / timers);
  return (v: number | undefined) => {
    const s = base(v);
    if (s !== undefined && s > max) throw new UsageError(`--${name} must be at most ${max} seconds, got ${s}`);
    return s;
  };
}

/** More threads than this is a typo, not a machine: each thread holds a copy of the model. */
const MAX_THREADS = 256;

/** A thread count: a positive (or, with `allowZero`, non-negative) integer of at most MAX_THREADS. */
export function threadCount(name: string, allowZero = false) {
  const base = (allowZero ? nonNegativeInt : positiveInt)(name);
  return (v: number | undefined) => {
    const n = base(v);
    if (n !== undefined && n > MAX_THREADS) throw new UsageError(`--${name} ${n} is more than ${MAX_THREADS} threads`);
    return n;
  };
}

/** compare's `--workers 1,2,4`. */
export function parseWorkerList(text: string): number[] {
  const list = text.split(',').map((w) => Number(w.trim()));
  if (list.some((w) => !Number.isInteger(w) || w < 1 || w > MAX_THREADS)) {
    throw new UsageError(`--workers must be a comma-separated list of integers from 1 to ${MAX_THREADS}, got "${text}"`);
  }
  return list;
}

/** Every worker must get at least one sample of a step's batch. */
export function checkWorkerCount(workers: number, batchSize: number): void {
  if (workers > batchSize) {
    throw new UsageError(`--workers ${workers} is more than the ${batchSize} samples of a step (the batch size): every worker needs at least one; use at most ${batchSize} workers or a larger --batch-size`);
  }
}

/**
 * A yargs check over all options: a flag given twice (yargs makes an array of it) and an empty
 * value (`--out ''`, or a bare `--out`, which yargs reads as '') are refused by name.
 * `positionals` are the arguments that are lists by design.
 */
export function checkSingleValues(positionals: string[]) {
  return (argv: Record<string, unknown>): true => {
    for (const [key, value] of Object.entries(argv)) {
      // '_' and '$0' are yargs' own; camelCase keys are copies of the dashed ones.
      if (key === '_' || key === '$0' || /[A-Z]/.test(key) || positionals.includes(key)) continue;
      if (Array.isArray(value)) throw new UsageError(`--${key} is given more than once`);
      if (value === '') throw new UsageError(`--${key} needs a value, got an empty one`);
    }
    return true;
  };
}
