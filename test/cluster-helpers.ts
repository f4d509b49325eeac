import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MODEL_FILE, OPTIMIZER_FILE, readTrainerState } from '../src/checkpoint/checkpoint.js';
import { readSafetensors, type NamedTensor } from '../src/checkpoint/safetensors.js';
import type { EvalRecord, MetricRecord, StepRecord } from '../src/coordinator/metrics.js';
import { CLI, VERDICT, scratchDir } from './helpers.js';

export const tmp = (name = 'cluster') => scratchDir(name);

/** A CLI process whose output lines are collected as they come. */
export interface Proc {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  exit: Promise<number | null>;
  /** Resolves with the first stdout line matching `pattern` (rejects if the process ends first). */
  line(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

const live = new Set<ChildProcess>();

/** Kills every process a test started that is still running (call after each test). */
export function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

export function spawnCli(args: string[]): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, VERDICT_PATH: VERDICT }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.on('exit', () => live.delete(child));
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters: Array<() => void> = [];
  const collect = (into: string[]) => {
    let rest = '';
    return (chunk: Buffer) => {
      const parts = (rest + chunk.toString()).split('\n');
      rest = parts.pop()!;
      into.push(...parts);
      waiters.forEach((w) => w());
    };
  };
  child.stdout!.on('data', collect(stdout));
  child.stderr!.on('data', collect(stderr));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => {
    waiters.forEach((w) => w());
    resolve(code);
  }));
  let ended = false;
  void exit.then(() => (ended = true));
  const line = (pattern: RegExp, timeoutMs = 60_000) => new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms:\n${stdout.join('\n')}\n${stderr.join('\n')}`)), timeoutMs);
    const check = () => {
      const found = stdout.find((l) => pattern.test(l));
      if (found !== undefined || ended) {
        clearTimeout(timer);
        if (found !== undefined) resolve(found);
        else reject(new Error(`process ended without a line matching ${pattern}:\n${stdout.join('\n')}\n${stderr.join('\n')}`));
        return true;
      }
      return false;
    };
    if (!check()) waiters.push(() => void check());
  });
  return { child, stdout, stderr, exit, line };
}

/**
 * The tiny run the cluster tests train: a batch of 4 (room for 4 slots), evaluations; `length`
 * steps, an evaluation every `evalFreq`.
 */
export function run(length = 4, evalFreq = 2): string[] {
  return ['--config', 'tiny', '--batch-size', '4', '--max-steps', String(length), '--eval-freq', String(evalFreq)];
}
/** A coordinator's flags on top of run(): the nodes' weights checked every step. */
export const CHECKED = ['--checksum-every', '1'];
export const RUN = run();

export interface Coordinator extends Proc {
  url: string;
  token: string;
  out: string;
}

/** Starts `train --listen 127.0.0.1:0` (in a new run directory unless resuming) and waits until it listens. */
export async function startCoordinator(args: string[], out = join(tmp(), 'run')): Promise<Coordinator> {
  const p = spawnCli(['train', '--listen', '127.0.0.1:0', ...(args.includes('--resume') ? [] : ['--out', out, ...CHECKED]), ...args]);
  const listening = await p.line(/^listening on /);
  const url = /listening on (wss?:\/\/[^/\s]+:\d+)/.exec(listening)![1]!;
  const command = await p.line(/worker --connect/);
  const token = /--token-file (\S+)/.exec(command)![1]!;
  return { ...p, url, token, out };
}

export function startNode(c: { url: string; token: string }, threads: number, extra: string[] = []): Proc {
  return spawnCli(['worker', '--connect', c.url, '--token-file', c.token, '--threads', String(threads), '--backend', 'wasm', ...extra]);
}

/** Waits for a process and checks its exit code, showing its output when it differs. */
export async function exited(p: Proc, code: number | null): Promise<void> {
  const got = await p.exit;
  assert.equal(got, code, `exit code ${got}, expected ${code}:\n${p.stdout.join('\n')}\n${p.stderr.join('\n')}`);
}

export function records(dir: string): MetricRecord[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricRecord);
}
export const stepsIn = (dir: string) => records(dir).filter((r): r is StepRecord => r.type === 'step');
export const evalsIn = (dir: string) => records(dir).filter((r): r is EvalRecord => r.type === 'eval');

/** The tensors of a run's committed checkpoint file. */
function checkpointTensors(dir: string, file: string): Map<string, NamedTensor> {
  const set = readTrainerState(dir).checkpoint;
  assert.ok(set, `${dir} has no checkpoint files (still at step 0)`);
  return readSafetensors(join(dir, set, file)).tensors;
}

const bytesOf = (t: NamedTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Two runs computed the same bits: weights, AdamW moments and every evaluation. */
export function assertSameRun(a: string, b: string, what: string): void {
  for (const f of [MODEL_FILE, OPTIMIZER_FILE]) {
    const [ta, tb] = [checkpointTensors(a, f), checkpointTensors(b, f)];
    assert.deepEqual([...ta.keys()], [...tb.keys()], `${what}: ${f} holds other tensors`);
    for (const [name, t] of ta) assert.ok(bytesOf(t).equals(bytesOf(tb.get(name)!)), `${what}: ${f} ${name} differs from the reference`);
  }
  const strip = (e: EvalRecord) => [e.step, e.trainLoss, e.valLoss];
  assert.deepEqual(evalsIn(a).map(strip), evalsIn(b).map(strip), `${what}: evaluations differ`);
}

/** The URL a `train --dashboard` or `dashboard` process prints. */
export async function dashboardUrl(p: Proc): Promise<string> {
  return /(http:\/\/\S+\/)/.exec(await p.line(/dashboard.*http:\/\//))![1]!;
}

/** The undisturbed reference: the same run on local threads only. */
export async function referenceRun(threads: number, args: string[] = RUN): Promise<string> {
  const out = join(tmp('ref'), 'run');
  const p = spawnCli(['train', '--workers', String(threads), '--out', out, ...args]);
  await exited(p, 0);
  return out;
}
