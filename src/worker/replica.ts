import { threadId } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import type {
  GenerateReply, HelloReply, LossReply, LossTask, ReplyBody, ReplyStats, Sample, TrainReply, TrainTask, WorkerReply, WorkerTask,
} from '../comm/protocol.js';
import { adamwUpdate, type AdamWMoments } from '../coordinator/adamw.js';
import { sumInto } from '../coordinator/reduce.js';
import { initBackend, wasmHeapBytes, type BackendChoice, type BackendName } from '../model/backend.js';
import type { ModelConfig } from '../model/config.js';
import { generate } from '../model/generate.js';
import { argmax } from '../model/sampling.js';
import { disposeWeights, uploadWeights, type ModelTensors } from '../model/gpt.js';
import { buildLayout, type ParamLayout } from '../model/layout.js';
import { sampleLosses } from '../model/inference.js';
import { forwardBackward } from '../model/step.js';

/** Where a replica reads the published weights and writes its gradients. */
export interface ReplicaStore {
  weights: Float32Array;
  /** Version of the weights currently in `weights`. */
  version(): number;
  gradient(slot: number): Float32Array;
  /** AdamW moments: the optimizer step is sharded across the workers. */
  moments: AdamWMoments;
}

function inputsOf(samples: Sample[]) {
  return {
    inputs: samples.map((s) => s.input),
    targets: samples.map((s) => s.target),
    sampleIds: samples.map((s) => s.id),
  };
}

/**
 * One model replica: computes gradients, losses and samples for the weights the coordinator
 * published. It keeps the weights as tensors until a new version is published.
 */
export class Replica {
  private tensors: ModelTensors | null = null;
  private loadedVersion = -1;

  private constructor(readonly layout: ParamLayout, readonly backend: BackendName, private readonly store: ReplicaStore) {}

  static async create(model: ModelConfig, backend: BackendChoice, store: ReplicaStore): Promise<Replica> {
    return new Replica(buildLayout(model), await initBackend(backend), store);
  }

  handle(task: WorkerTask): WorkerReply {
    const start = performance.now();
    const reply = this.dispatch(task);
    const stats: ReplyStats = { computeMs: performance.now() - start, heapBytes: wasmHeapBytes(), numTensors: tf.memory().numTensors };
    return { ...reply, ...stats } as WorkerReply;
  }

  private dispatch(task: WorkerTask): ReplyBody {
    switch (task.kind) {
      case 'hello':
        return { kind: 'hello', backend: this.backend, threadId } satisfies ReplyBody<HelloReply>;
      case 'train':
        return this.train(task);
      case 'loss':
        return this.loss(task);
      case 'reduce':
        sumInto(this.store.gradient(task.slots[0]!), task.slots.slice(1).map((k) => this.store.gradient(k)), task.start, task.end);
        return { kind: 'reduce' };
      case 'adamw':
        adamwUpdate(this.store.weights, this.store.gradient(task.slot), this.store.moments, task.options, task.t, task.gradScale, task.start, task.end);
        return { kind: 'adamw' };
      case 'generate': {
        const m = this.weightsFor(task.version);
        const tokens = generate(this.layout, m, this.store.weights, task.prompt, task.maxNewTokens, argmax);
        return { kind: 'generate', tokens } satisfies ReplyBody<GenerateReply>;
      }
    }
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

  private train(task: TrainTask): ReplyBody<TrainReply> {
    const t0 = performance.now();
    const m = this.weightsFor(task.version);
    const upload = performance.now() - t0;
    const batch = inputsOf(task.samples);
    const plan = { rate: this.layout.config.dropRate, seed: task.dropout.seed, step: task.step, sampleIds: batch.sampleIds };
    const r = forwardBackward(this.layout, m, this.store.weights, batch, task.dropout.rate > 0 ? plan : null, this.store.gradient(task.slot));
    return { kind: 'train', sampleLoss: r.sampleLoss, tokens: r.tokens, touchedRows: r.touchedRows, phases: { upload, ...r.phases } };
  }

  private loss(task: LossTask): ReplyBody<LossReply> {
    const m = this.weightsFor(task.version);
    const sampleLoss: number[] = [];
    let tokens = 0;
    for (let i = 0; i < task.samples.length; i += task.chunk) {
      const chunk = task.samples.slice(i, i + task.chunk);
      sampleLoss.push(...sampleLosses(this.layout, m, this.store.weights, inputsOf(chunk)));
      tokens += chunk.reduce((n, s) => n + s.target.length, 0);
    }
    return { kind: 'loss', sampleLoss, tokens };
  }

  dispose(): void {
    if (this.tensors) disposeWeights(this.tensors);
    this.tensors = null;
  }
}
