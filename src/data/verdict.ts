import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError } from '../util/errors.js';

/** Where the reference code downloads the story from. */
export const VERDICT_URL =
  'https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt';

export function defaultCachePath(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'gpt-ddp', 'the-verdict.txt');
}

export interface TextSource {
  text: string;
  /** Where it came from: a path or the URL. */
  origin: string;
}

function readText(path: string, how: string): TextSource {
  try {
    const text = readFileSync(path, 'utf8');
    if (text.length === 0) throw new UsageError(`data file ${path} (${how}) is empty`);
    return { text, origin: path };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot read data file ${path} (${how}): ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * The training text: `--data`, else $VERDICT_PATH, else the cached copy, else a download from the
 * book's repository (cached for next time).
 */
export async function loadVerdict(
  dataPath?: string, { cachePath = defaultCachePath(), url = VERDICT_URL }: { cachePath?: string; url?: string } = {},
): Promise<TextSource> {
  if (dataPath) return readText(dataPath, '--data');
  const envPath = process.env.VERDICT_PATH;
  if (envPath) return readText(envPath, 'VERDICT_PATH');
  if (existsSync(cachePath)) return readText(cachePath, 'cache');
  let text: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(20_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    text = await res.text();
  } catch (err) {
    throw new UsageError(
      `no training text: could not download ${url} (${(err as Error).message}); ` +
        'pass --data PATH/the-verdict.txt or set VERDICT_PATH',
    );
  }
  mkdirSync(dirname(cachePath), { recursive: true });
  writeFileSync(`${cachePath}.tmp`, text);
  renameSync(`${cachePath}.tmp`, cachePath);
  return { text, origin: url };
}
