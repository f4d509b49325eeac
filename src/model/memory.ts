import { totalmem } from 'node:os';
import { UsageError } from '../util/errors.js';
import type { BackendChoice } from './backend.js';
import { activationFloats } from './block.js';
import type { RunConfig } from './config.js';
import { buildLayout } from './layout.js';
import { DEFAULT_ACTIVATION_BUDGET } from './step.js';

export const GiB = 2 ** 30;
const FLOAT = 4;
/** What one wasm instance can address (wasm32; see DESIGN.md): each worker thread has its own. */
const WASM_HEAP_BYTES = 4 * GiB;

interface MemoryEstimate {
  parameters: number;
  /** Weights, AdamW m and v, and the reduced gradient: four float32 copies of the parameters. */
  coordinatorBytes: number;
  /** One worker thread's tfjs heap: its weights as tensors, activations and vocabulary logits. */
  threadHeapBytes: number;
  /** The heap plus the thread's gradient buffer (shared memory outside the heap). */
  threadBytes: number;
  /** Threads that get samples: more threads than samples stay idle. */
  activeThreads: number;
  totalBytes: number;
}

/**
 * A rough estimate of a training run's peak memory, on the generous side. Per thread, with S
 * samples of T tokens (its share of the batch): blocks keep their activations up to the step's
 * budget and recompute the others one at a time, every block keeps its input ((L+1) S T D floats),
 * and the head keeps the vocabulary probabilities for the backward while the next logits are
 * computed (counted as 2 S T V floats).
 */
function estimateTrainingMemory(config: RunConfig, threads: number): MemoryEstimate {
  const { embDim: D, nLayers: L, vocabSize: V, contextLength: T, nHeads: H } = config.model;
  const { batchSize } = config.training;
  const parameters = buildLayout(config.model).totalSize;
  const paramBytes = FLOAT * parameters;
  const activeThreads = Math.min(threads, batchSize);
  const samples = Math.ceil(batchSize / Math.max(1, activeThreads));
  const rows = samples * T;
  const block = FLOAT * activationFloats({ batch: samples, time: T, heads: H }, D);
  const activations = Math.min(L * block, DEFAULT_ACTIVATION_BUDGET) + block + FLOAT * (L + 1) * rows * D;
  const logits = 2 * FLOAT * rows * V;
  const threadHeapBytes = paramBytes + activations + logits;
  const threadBytes = threadHeapBytes + paramBytes;
  const coordinatorBytes = 4 * paramBytes;
  return { parameters, coordinatorBytes, threadHeapBytes, threadBytes, activeThreads, totalBytes: coordinatorBytes + activeThreads * threadBytes };
}

const gib = (bytes: number) => `${(bytes / GiB).toFixed(1)} GiB`;

/**
 * Refuses a run whose estimate exceeds this machine's memory, or (on wasm; `auto` counts as wasm)
 * a worker thread's 4 GiB heap: better one line now than an out-of-memory abort in a thread.
 */
export function checkTrainingMemory(config: RunConfig, threads: number, backend: BackendChoice): void {
  const e = estimateTrainingMemory(config, threads);
  const machine = totalmem();
  if (e.totalBytes > machine) {
    throw new UsageError(`the model would need about ${gib(e.totalBytes)} of memory (${e.parameters.toLocaleString('en-US')} parameters: ${gib(e.coordinatorBytes)} ` +
      `on the coordinator, ${gib(e.threadBytes)} for each of ${e.activeThreads} worker threads) but this machine has ${gib(machine)}; use a smaller model, batch or fewer workers`);
  }
  const wasm = backend === 'wasm' || backend === 'auto';
  if (wasm && e.activeThreads > 0 && e.threadHeapBytes > WASM_HEAP_BYTES) {
    throw new UsageError(`a worker thread would need about ${gib(e.threadHeapBytes)} of wasm heap (weights, activations and logits of its share of the batch), ` +
      `more than the ${gib(WASM_HEAP_BYTES)} a wasm thread can address; use a smaller model or batch, or more workers`);
  }
}
