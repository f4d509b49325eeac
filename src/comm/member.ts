import type { MemberInfo } from './group.js';
import type { Partial, SlotStats } from './protocol.js';
import type { SlotWork, ThreadPool, TrainWork } from './threads.js';

export interface SlotLoss {
  slot: number;
  sampleLoss: number[];
  computeMs: number;
}

/** One worker of a group, local threads or a remote node, as the cluster drives it. */
export interface Member {
  readonly info: MemberInfo;
  /** Computes the gradients of the work's slots; their partial sums flow to `sink` as they are ready. */
  train(work: TrainWork, sink: (p: Partial) => void): Promise<SlotStats[]>;
  losses(version: number, work: SlotWork[], chunk: number): Promise<SlotLoss[]>;
  generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]>;
}

/** This process's worker threads: they share the coordinator's weights, nothing is copied. */
export class LocalMember implements Member {
  constructor(readonly info: MemberInfo, private readonly pool: ThreadPool) {}

  async train(work: TrainWork, sink: (p: Partial) => void): Promise<SlotStats[]> {
    return this.pool.train(work, sink);
  }

  losses(version: number, work: SlotWork[], chunk: number): Promise<SlotLoss[]> {
    return this.pool.losses(version, work, chunk);
  }

  generate(version: number, prompt: number[], maxNewTokens: number): Promise<number[]> {
    return this.pool.generate(version, prompt, maxNewTokens);
  }
}
