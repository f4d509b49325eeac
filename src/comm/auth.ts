import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UsageError } from '../util/errors.js';

/**
 * The run's shared secret and the challenge-response that proves knowledge of it without
 * sending it: each side answers the other's fresh nonce with an HMAC-SHA256 keyed by the token.
 */

export const NONCE_BYTES = 32;

export function newNonce(): Uint8Array {
  return randomBytes(NONCE_BYTES);
}

/** Writes a fresh random token to `path`, readable by its owner only. */
export function createTokenFile(path: string): string {
  const token = randomBytes(32).toString('hex');
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, `${token}\n`);
  } finally {
    closeSync(fd);
  }
  return token;
}

/** A run's token: from --token-file, else the run directory's own `token` (`created` now when missing). */
export function runToken(tokenFile: string | undefined, runDir: string): { token: string; path: string; created: boolean } {
  const own = join(runDir, 'token');
  const path = resolve(tokenFile ?? own);
  const created = !tokenFile && !existsSync(own);
  return { token: created ? createTokenFile(own) : readTokenFile(path), path, created };
}

/** Reads a token file, refusing one that others can read (as ssh does for keys). */
export function readTokenFile(path: string): string {
  if (!existsSync(path)) throw new UsageError(`--token-file ${path} does not exist (copy it from the coordinator's run directory)`);
  const st = statSync(path);
  if (!st.isFile()) throw new UsageError(`--token-file ${path} is not a file`);
  if ((st.mode & 0o077) !== 0) {
    throw new UsageError(`--token-file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): run chmod 600 ${path}`);
  }
  const token = readFileSync(path, 'utf8').trim();
  if (token.length < 16) throw new UsageError(`--token-file ${path} holds no token of at least 16 characters`);
  return token;
}

/** HMAC-SHA256(token, role || nonces...): binds the answer to this exchange and direction. */
export function proof(token: string, role: 'node' | 'coordinator', ...nonces: Uint8Array[]): Uint8Array {
  const h = createHmac('sha256', token).update(`gpt-ddp ${role}`);
  for (const n of nonces) h.update(n);
  return h.digest();
}

export function proofMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return expected.length === got.length && timingSafeEqual(expected, got);
}
