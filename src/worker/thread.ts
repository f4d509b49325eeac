import { workerData } from 'piscina';
import type { ThreadSetup } from '../comm/threads.js';
import type { WorkerReply, WorkerTask } from '../comm/protocol.js';
import { Replica } from './replica.js';

/** Entry point of a piscina worker thread: one replica per thread, created on first use. */
const setup = workerData as ThreadSetup;
const weights = new Float32Array(setup.weights);
const version = new Int32Array(setup.version);
const gradients = setup.gradients.map((b) => new Float32Array(b));
const moments = { m: new Float32Array(setup.adamM), v: new Float32Array(setup.adamV) };

let replica: Promise<Replica> | null = null;

/**
 * Test hook for failure handling: "throw@S" or "exit@S" makes the thread that gets the train
 * task of step S with slot 1 (or slot 0 with one worker) throw or exit.
 */
function injectFault(task: WorkerTask): void {
  if (!setup.fault || task.kind !== 'train') return;
  const [mode, stepText] = setup.fault.split('@');
  if (Number(stepText) !== task.step || task.slot !== Math.min(1, gradients.length - 1)) return;
  if (mode === 'exit') process.exit(3);
  throw new Error(`injected fault at step ${task.step}`);
}

export default async function run(task: WorkerTask): Promise<WorkerReply> {
  replica ??= Replica.create(setup.model, setup.backend, {
    weights,
    version: () => Atomics.load(version, 0),
    gradient: (slot) => gradients[slot]!,
    moments,
  });
  const r = await replica;
  injectFault(task);
  return r.handle(task);
}
