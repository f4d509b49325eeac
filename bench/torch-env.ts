/**
 * PyTorch for the benchmarks that measure us against it: Debian's python3-torch (or $PYTHON),
 * run from bench/*.py in a child process.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const PYTHON = process.env.PYTHON ?? '/usr/bin/python3';
export const BENCH_DIR = fileURLToPath(new URL('../../bench/', import.meta.url));

let probe: { ok: boolean; detail: string } | null = null;

/** Whether PyTorch imports, and its version or the reason it does not. */
export function torchAvailable(): { ok: boolean; detail: string } {
  probe ??= (() => {
    const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    return r.status === 0 ? { ok: true, detail: r.stdout.trim() } : { ok: false, detail: `not measured: ${PYTHON} cannot import torch (apt-get install python3-torch)` };
  })();
  return probe;
}

/** bench/torch_step.py --serve: PyTorch's gradient step, one at a time, on request. */
export class TorchStep {
  private constructor(private readonly child: ChildProcessWithoutNullStreams, private readonly lines: Interface, readonly info: string) {}

  static unavailable(): string {
    return torchAvailable().detail;
  }

  static async start(opts: { config: string; threads: number; batch: number }): Promise<TorchStep | null> {
    if (!torchAvailable().ok) return null;
    const child = spawn(PYTHON, [`${BENCH_DIR}torch_step.py`, '--serve', '--config', opts.config, '--threads', String(opts.threads), '--batch', String(opts.batch)]);
    child.stderr.pipe(process.stderr);
    const lines = createInterface({ input: child.stdout });
    const ready = JSON.parse(await nextLine(lines)) as { torch: string; threads: number; blas: string | null };
    return new TorchStep(child, lines, `${ready.torch}, ${ready.threads} thread${ready.threads === 1 ? '' : 's'}${ready.blas ? `, ${ready.blas}` : ''}`);
  }

  /** Seconds of one forward and backward. */
  async step(): Promise<number> {
    this.child.stdin.write('step\n');
    const reply = JSON.parse(await nextLine(this.lines)) as { sec?: number; error?: string };
    if (reply.sec === undefined) throw new Error(`torch_step.py: ${reply.error ?? 'no time in its reply'}`);
    return reply.sec;
  }

  close(): void {
    this.child.stdin.end('quit\n');
  }
}

function nextLine(lines: Interface): Promise<string> {
  return new Promise((resolve, reject) => {
    const onLine = (line: string) => {
      lines.off('close', onClose);
      resolve(line);
    };
    const onClose = () => reject(new Error('the PyTorch process ended early (see its output above)'));
    lines.once('line', onLine);
    lines.once('close', onClose);
  });
}
