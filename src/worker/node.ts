import { WebSocket } from 'ws';
import { maxPayload, PIECE_FLOATS } from '../comm/frames.js';
import type { BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import { UsageError } from '../util/errors.js';
import { parseConnect, readCa } from './connect.js';
import { NodeSession, type SessionEnd } from './node-session.js';

export interface NodeArgs {
  connect: string;
  token: string;
  threads: number;
  backend: BackendChoice;
  kernels: KernelChoice;
  /** PEM certificate(s) to trust for wss:// (e.g. the coordinator's self-signed one). */
  ca?: string;
  /** Seconds to keep trying to (re)join after the coordinator is lost or unreachable; 0: give up at once. */
  rejoinSec?: number;
  /** Test hook (see node-faults.ts). */
  fault?: string;
}

/** Exit codes: 0 the run ended, 1 lost the coordinator or failed, 2 refused, 130 stopped by a signal. */
export type NodeExit = 0 | 1 | 2 | 130;

/**
 * The end of a session as the CLI reports it: the run's end and a stop are progress, told on
 * stdout; a failure is thrown, so that it reaches stderr as `gpt-ddp: ...` with its exit code like
 * every other error (a refusal, 2, is the user's: wrong token file or another gpt-ddp version).
 */
function finish(code: NodeExit, line: string, log: (line: string) => void): 0 | 130 {
  if (code === 1) throw new Error(line);
  if (code === 2) throw new UsageError(line);
  log(line);
  return code;
}

/** Pause between attempts to rejoin. */
const REJOIN_EVERY_MS = 1000;

/**
 * A remote node: joins a run over WebSocket, mirrors the coordinator's weights and moments,
 * computes the slots it is given on its threads and streams their partial sums piece by piece,
 * then applies the step's reduced gradient with the same AdamW arithmetic as the coordinator.
 * With `rejoinSec`, a lost or unreachable coordinator is tried again for that long (a coordinator
 * restarted with --resume on the same address takes the node back), so nodes may also start
 * before it; the time counts from the first loss after a session that committed a step, so a node
 * that is dropped again and again gives up. Resolves with the exit code of an end or a stop (0,
 * 130); throws what failed (see `finish`).
 */
export async function runNode(args: NodeArgs, log: (line: string) => void): Promise<0 | 130> {
  const url = parseConnect(args.connect);
  const ca = readCa(args.ca, url);
  const rejoinMs = (args.rejoinSec ?? 0) * 1000;
  let session: NodeSession | null = null;
  // An object, so the signal handler's writes are not lost to narrowing.
  const stop: { by: string | null; wake: () => void } = { by: null, wake: () => {} };
  const onSignal = (signal: string) => {
    // A second signal gets the default handling (the process ends at once), as with process.once.
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    stop.by = signal;
    session?.leave(`stopped by ${signal}`);
    stop.wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    let lostSince: number | null = null;
    for (;;) {
      // A zero masking key: ws then neither copies nor masks each 4 MB frame, nor does the coordinator
      // unmask it. Masking guards caching proxies against scripts in a browser; this client is none.
      const ws = new WebSocket(url, {
        perMessageDeflate: false, maxPayload: maxPayload(PIECE_FLOATS), ca, generateMask: (mask) => mask.fill(0),
      });
      const end = await new Promise<SessionEnd>((resolveEnd) => (session = new NodeSession(ws, url, args, log, resolveEnd)));
      session = null;
      if (!end.lost || rejoinMs === 0 || stop.by !== null) return finish(end.lost && stop.by !== null ? 130 : end.code, end.line, log);
      if (end.committed || lostSince === null) {
        lostSince = performance.now();
        log(`${end.line}; trying again for up to ${rejoinMs / 1000} s (--rejoin)`);
      }
      if (performance.now() - lostSince > rejoinMs) return finish(1, `gave up after ${rejoinMs / 1000} s (--rejoin); last: ${end.line}`, log);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, REJOIN_EVERY_MS);
        stop.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      stop.wake = () => {};
      if (stop.by !== null) {
        return finish(130, `stopped by ${stop.by} while waiting to rejoin`, log);
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
