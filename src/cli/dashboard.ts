import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readTokenFile, runToken } from '../comm/auth.js';
import { isLoopback, startDashboard, type Dashboard, type DashboardRun } from '../dashboard/server.js';
import { UsageError } from '../util/errors.js';
import { parseListen } from './listen.js';

/** `--dashboard [HOST:]PORT`: a bare port listens on 127.0.0.1. */
export function parseDashboardAddress(value: string): { host: string; port: number } {
  if (/^\d{1,5}$/.test(value) && Number(value) <= 65535) return { host: '127.0.0.1', port: Number(value) };
  try {
    return parseListen(value);
  } catch {
    throw new UsageError(`--dashboard must be [HOST:]PORT (e.g. 6006 or 0.0.0.0:6006), got "${value}"`);
  }
}

/**
 * The token a dashboard on a non-loopback address asks for, and its file: --token-file, else the
 * run's own token file (made now, mode 0600, when the run has none); null on loopback.
 */
function dashboardToken(host: string, tokenFile: string | undefined, runDir: string | null): { token: string; path: string } | null {
  if (isLoopback(host)) return null;
  if (runDir) return runToken(tokenFile, runDir);
  if (!tokenFile) throw new UsageError(`a dashboard on ${host} needs --token-file: the secret to sign in with (it listens beyond this machine)`);
  return { token: readTokenFile(tokenFile), path: tokenFile };
}

/** The dashboard of a training run, started by `train --dashboard`. */
export async function dashboardForRun(address: string, run: DashboardRun, tokenFile: string | undefined, log: (line: string) => void): Promise<Dashboard> {
  const { host, port } = parseDashboardAddress(address);
  const token = dashboardToken(host, tokenFile, run.dir);
  const dashboard = await startDashboard({ host, port, runs: [run], token: token?.token ?? null });
  log(`dashboard: ${dashboard.url}${token ? ` (sign in with the token in ${token.path})` : ''}`);
  return dashboard;
}

function runOf(dir: string): DashboardRun {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${dir} is not a run directory`);
  if (!existsSync(join(dir, 'metrics.jsonl')) && !existsSync(join(dir, 'config.json'))) {
    throw new UsageError(`${dir} holds no run (no metrics.jsonl or config.json)`);
  }
  let totalSteps: number | undefined;
  try {
    const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { steps?: unknown };
    if (typeof summary.steps === 'number') totalSteps = summary.steps;
  } catch {
    // still running: no summary yet
  }
  return { dir: resolve(dir), label: basename(resolve(dir)), ...(totalSteps !== undefined ? { totalSteps } : {}) };
}

/** `gpt-ddp dashboard RUN_DIR...`: serves finished or running runs, overlaid, until Ctrl-C. */
export async function runDashboard(args: { runs: string[]; host: string; port: number; tokenFile?: string }, log: (line: string) => void): Promise<void> {
  const runs = args.runs.map(runOf);
  const token = dashboardToken(args.host, args.tokenFile, null);
  const dashboard = await startDashboard({ host: args.host, port: args.port, runs, token: token?.token ?? null });
  log(`dashboard of ${runs.length} run${runs.length === 1 ? '' : 's'}: ${dashboard.url} (Ctrl-C to stop)`);
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await dashboard.close();
}
