import { UsageError } from '../util/errors.js';

/** yargs `coerce` checks: a bad value becomes one clear usage error (exit code 2). */
function check(name: string, ok: (v: number) => boolean, expected: string) {
  return (v: number | undefined) => {
    if (Array.isArray(v)) throw new UsageError(`--${name} is given more than once`);
    if (v !== undefined && !ok(v)) throw new UsageError(`--${name} must be ${expected}, got ${v}`);
    return v;
  };
}

export const positiveInt = (name: string) => check(name, (v) => Number.isInteger(v) && v >= 1, 'a positive integer');
export const nonNegativeInt = (name: string) => check(name, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
export const positiveNumber = (name: string) => check(name, (v) => Number.isFinite(v) && v > 0, 'a positive number');
export const nonNegativeNumber = (name: string) => check(name, (v) => Number.isFinite(v) && v >= 0, 'a non-negative number');
