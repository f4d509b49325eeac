import * as tf from '@tensorflow/tfjs';
import type {
  GenerateReply, HelloReply, LossReply, LossTask, ReplyBody, ReplyStats, ThreadReply, TrainReply, TrainTask,
} from '../comm/thread-protocol.js';
import type { Sample } from '../comm/protocol.js';
import { initBackend, wasmHeapBytes, type BackendChoice, type BackendName } from '../model/backend.js';
import type { ModelConfig } from '../model/config.js';
import { generate } from '../model/generate.js';
import { kernelSummary, type KernelChoice } from '../model/provider.js';
import { argmax } from '../model/sampling.js';
import { disposeWeights, uploadWeights, type ModelTensors } from '../model/gpt.js';
import { buildLayout, type ParamLayout } from '../model/layout.js';
import { sampleLosses } from '../model/inference.js';
import { forwardBackward } from '../model/step.js';

/** Where a replica reads the published weights. */
export interface WeightStore {
  weights: Float32Array;
  /** Version of the weights currently in `weights`. */
  version(): number;
}

function inputsOf(samples: Sample[]) {
  return {
    inputs: samples.map((s) => s.input),
    targets: samples.map((s) => s.target),
    sampleIds: samples.map((s) => s.id),
  };
}

/** Runs `work` and attaches the time it took and the backend's memory figures. */
export function withStats<R extends ThreadReply>(work: () => ReplyBody<R>): R {
  const start = performance.now();
  const reply = work();
  const stats: ReplyStats = { computeMs: performance.now() - start, heapBytes: wasmHeapBytes(), numTensors: tf.memory().numTensors };
  return { ...reply, ...stats } as R;
}

/**
 * One model replica: computes gradients, losses and samples for the weights the coordinator
 * published. It keeps the weights as tensors until a new version is published.
 */
export class Replica {
  private tensors: ModelTensors | null = null;
  private loadedVersion = -1;

  private constructor(readonly layout: ParamLayout, readonly backend: BackendName, private readonly store: WeightStore) {}

  static async create(model: ModelConfig, backend: BackendChoice, kernels: KernelChoice, store: WeightStore): Promise<Replica> {
    return new Replica(buildLayout(model), await initBackend(backend, kernels), store);
  }

  hello(): ReplyBody<HelloReply> {
    return { kind: 'hello', backend: this.backend, kernels: kernelSummary() };
  }

  private weightsFor(version: number): ModelTensors {
    if (this.tensors && this.loadedVersion === version) return this.tensors;
    const published = this.store.version();
    if (published !== version) {
      throw new Error(`weights of version ${version} requested but version ${published} is published`);
    }
    if (this.tensors) disposeWeights(this.tensors);
    this.tensors = uploadWeights(this.layout, this.store.weights);
    this.loadedVersion = version;
    return this.tensors;
  }

  /** The slot's gradient into task.gradient; each completed region is counted in task.progress. */
  train(task: TrainTask): ReplyBody<TrainReply> {
    const t0 = performance.now();
    const m = this.weightsFor(task.version);
    const upload = performance.now() - t0;
    const batch = inputsOf(task.samples);
    const plan = { rate: task.dropout.rate, seed: task.dropout.seed, step: task.step, sampleIds: batch.sampleIds };
    const progress = new Int32Array(task.progress);
    const onRegion = (region: number) => {
      Atomics.store(progress, task.progressIndex, region + 1);
      Atomics.add(progress, 0, 1);
      Atomics.notify(progress, 0);
    };
    const grad = new Float32Array(task.gradient);
    const r = forwardBackward(this.layout, m, this.store.weights, batch, task.dropout.rate > 0 ? plan : null, grad, onRegion);
    return { kind: 'train', sampleLoss: r.sampleLoss, tokens: r.tokens, touchedRows: r.touchedRows, phases: { upload, ...r.phases } };
  }

  loss(task: LossTask): ReplyBody<LossReply> {
    const m = this.weightsFor(task.version);
    const sampleLoss: number[] = [];
    for (let i = 0; i < task.samples.length; i += task.chunk) {
      sampleLoss.push(...sampleLosses(this.layout, m, this.store.weights, inputsOf(task.samples.slice(i, i + task.chunk))));
    }
    return { kind: 'loss', sampleLoss };
  }

  generate(version: number, prompt: number[], maxNewTokens: number): ReplyBody<GenerateReply> {
    const m = this.weightsFor(version);
    return { kind: 'generate', tokens: generate(this.layout, m, this.store.weights, prompt, maxNewTokens, argmax) };
  }
}
