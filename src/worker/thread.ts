import { createHash } from 'node:crypto';
import { workerData } from 'piscina';
import type { ThreadReply, ThreadSetup, ThreadTask } from '../comm/thread-protocol.js';
import { adamwUpdate } from '../math/adamw.js';
import { Replica, withStats } from './replica.js';

/** Entry point of a pool thread: the optimizer on shared memory, and one model replica per thread. */
const setup = workerData as ThreadSetup;
const weights = new Float32Array(setup.weights);
const version = new Int32Array(setup.version);
const moments = { m: new Float32Array(setup.adamM), v: new Float32Array(setup.adamV) };
const reduced = new Float32Array(setup.reduced);

let replica: Promise<Replica> | null = null;

function model(): Promise<Replica> {
  if (!setup.model) throw new Error('this pool has no model (optimizer threads only)');
  replica ??= Replica.create(setup.model, setup.backend, setup.kernels, { weights, version: () => Atomics.load(version, 0) });
  return replica;
}

/**
 * Test hook for failure handling: "throw@S" or "exit@S" makes the thread that gets the train
 * task of step S for slot 1 (slot 0 when it is the only one) throw or exit.
 */
function injectFault(task: ThreadTask): void {
  if (!setup.fault || task.kind !== 'train') return;
  const [mode, stepText, slotText] = setup.fault.split('@');
  if (Number(stepText) !== task.step || task.slot !== Number(slotText ?? 1)) return;
  if (mode === 'exit') process.exit(3);
  throw new Error(`injected fault at step ${task.step}`);
}

export default async function run(task: ThreadTask): Promise<ThreadReply> {
  if (task.kind === 'adamw') {
    return withStats(() => {
      adamwUpdate(weights, reduced, moments, task.options, task.t, task.gradScale, task.start, task.end);
      return { kind: 'adamw' };
    });
  }
  if (task.kind === 'hash') {
    return withStats(() => ({ kind: 'hash', hash: createHash('sha256').update(new Uint8Array(setup.weights)).digest('hex') }));
  }
  const r = await model();
  injectFault(task);
  switch (task.kind) {
    case 'hello':
      return withStats(() => r.hello());
    case 'train':
      return withStats(() => r.train(task));
    case 'loss':
      return withStats(() => r.loss(task));
    case 'generate':
      return withStats(() => r.generate(task.version, task.prompt, task.maxNewTokens));
  }
}
