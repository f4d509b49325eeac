import { assignSlots, type Capacity } from '../math/assign.js';
import { errorMessage } from '../util/errors.js';
import { WorkerError, type MemberEvent, type MemberInfo } from './group.js';
import type { LocalMember, Member } from './member.js';
import type { RemoteNode } from './remote.js';
import type { NodeServer } from './server.js';

export interface MembershipOptions {
  /** This process's threads, if it has any. */
  local: LocalMember | null;
  /** Where nodes join (none: local threads only). */
  server?: NodeServer;
  /** Brings a node that just joined up to date (weights, moments, the step's sums so far); throws if it cannot. */
  welcome: (node: RemoteNode, version: number) => Promise<void>;
  /** Seconds to wait for a node when no worker is left. */
  waitTimeoutSec: number;
  /** Ends a wait for nodes (Ctrl-C). */
  stop?: AbortSignal;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * Who works in the group: the local threads and the admitted nodes, how a step's slots are placed
 * on them, and the joins and departures as events. Where every member runs the same kernels,
 * placement never changes a step's result.
 */
export class Membership {
  private nodeList: RemoteNode[] = [];
  private assignment = new Map<number, number[]>();
  private slots = 0;
  /** The step under way, or the next one: what events are recorded against. */
  step = 0;
  private taskCounter = 0;
  private readonly listeners: Array<(e: MemberEvent) => void> = [];

  constructor(private readonly opts: MembershipOptions) {}

  get local(): LocalMember | null {
    return this.opts.local;
  }

  get nodes(): readonly RemoteNode[] {
    return this.nodeList;
  }

  live(): Member[] {
    return [...(this.local ? [this.local] : []), ...this.nodeList];
  }

  info(): MemberInfo[] {
    return this.live().map((m) => m.info);
  }

  member(id: number): Member {
    return this.live().find((m) => m.info.id === id)!;
  }

  /** A new task number: unique for the group's lifetime, so late frames of a failed task are told apart. */
  newTask(): number {
    return ++this.taskCounter;
  }

  /** Slots per step: fixed when the group starts (0 before). */
  get slotCount(): number {
    return this.slots;
  }

  /** Fixes the slots per step, once, and places them. */
  fixSlots(count: number): void {
    if (this.slots !== 0) throw new Error(`the group has ${this.slots} slots already`);
    this.slots = count;
    this.rebalance();
  }

  /** Which slots each live member computes when none fails (member id → slots). */
  get placement(): ReadonlyMap<number, number[]> {
    return this.assignment;
  }

  description(): string {
    const parts: string[] = [];
    const nodes = this.nodeList;
    if (nodes.length > 0) parts.push(`${plural(nodes.length, 'node')} (${plural(nodes.reduce((n, m) => n + m.info.threads, 0), 'thread')})`);
    if (this.local) parts.push(plural(this.local.info.threads, nodes.length ? 'local thread' : 'worker thread'));
    return `${parts.join(' + ')}, ${plural(this.slots, 'slot')} per step`;
  }

  onEvent(listener: (e: MemberEvent) => void): void {
    this.listeners.push(listener);
  }

  emit(e: MemberEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Waits until `count` nodes have joined and been admitted at `version`. */
  async awaitNodes(count: number, version: number): Promise<void> {
    while (this.nodeList.length < count) {
      if (!(await this.opts.server!.waitForJoin(Infinity, this.opts.stop))) throw new WorkerError('the coordinator', 'start-up', 'stopped while waiting for nodes');
      await this.admit(version);
    }
  }

  /** Welcomes the nodes that have joined since the last call and adds them to the group. */
  async admit(version: number): Promise<void> {
    const joined = this.opts.server?.takeJoined() ?? [];
    for (const node of joined) {
      try {
        await this.opts.welcome(node, version);
      } catch (err) {
        node.close(`could not send it the weights: ${errorMessage(err)}`);
        continue;
      }
      // It may have gone while it loaded them, before its close handler below existed.
      if (node.closed) continue;
      this.nodeList.push(node);
      node.onClose((reason) => this.lose(node, reason));
      this.emit({ event: 'join', step: version, member: node.info.id, host: node.info.host, threads: node.info.threads, backend: node.info.backend, kernels: node.info.kernels });
    }
    if (joined.length > 0 && this.slots > 0) this.rebalance();
  }

  /** Places the slots on the live members in proportion to their threads. */
  private rebalance(): void {
    const caps: Capacity[] = this.live().map((m) => ({ id: m.info.id, threads: m.info.threads }));
    this.assignment = caps.length > 0 ? assignSlots(this.slots, caps) : new Map();
  }

  /** Removes a node (idempotent); its slots are re-placed by whoever is waiting for them. */
  lose(node: RemoteNode, reason: string, event: MemberEvent['event'] = 'lost'): void {
    if (!this.nodeList.includes(node)) return;
    this.nodeList = this.nodeList.filter((n) => n !== node);
    node.close(reason);
    this.emit({ event: node.leftCleanly ? 'leave' : event, step: this.step, member: node.info.id, host: node.info.host, threads: node.info.threads, reason });
    this.rebalance();
  }

  /** Takes every node out of the group, for the caller to shut down. */
  release(): RemoteNode[] {
    const nodes = this.nodeList;
    this.nodeList = [];
    return nodes;
  }

  /** No worker left: say so, then wait for a node to join (it receives the current state). */
  private async waitForWorkers(step: number): Promise<Member[]> {
    const timeout = this.opts.waitTimeoutSec;
    const deadline = performance.now() + timeout * 1000;
    this.emit({ event: 'waiting', step, member: -1, host: '', threads: 0, reason: `no worker left; waiting up to ${timeout} s for a node to join` });
    while (this.live().length === 0) {
      const joined = await this.opts.server?.waitForJoin(deadline - performance.now(), this.opts.stop);
      if (this.opts.stop?.aborted) throw new WorkerError('every worker', `step ${step}`, 'stopped while waiting for a node');
      if (!joined) throw new WorkerError('every worker', `step ${step}`, `all workers were lost and none joined within ${timeout} s`);
      await this.admit(step);
    }
    return this.live();
  }

  /** The live members, waiting for one to join if there is none. */
  async someone(step: number): Promise<Member[]> {
    return this.live().length > 0 ? this.live() : this.waitForWorkers(step);
  }
}
