import type { ParamLayout } from '../model/layout.js';
import type { MemberStep } from './group.js';
import type { Member } from './member.js';
import type { SlotStats } from './protocol.js';

/** How one task of a step ended, as the cluster's placement loop saw it. */
export interface TaskOutcome<T> {
  member: Member;
  task: number;
  slots: number[];
  sentAt: number;
  doneAt: number;
  result?: T[];
  error?: unknown;
}

type Traffic = { sent: number; received: number };

/**
 * Each member's share of a step: its slots, its slowest task's compute and the rest of that
 * task's round trip, and (nodes) the bytes it sent and received, from the coordinator's counters
 * before and after the step.
 */
export function memberSteps(outcomes: Array<TaskOutcome<SlotStats>>, nodes: Array<{ id: number; before?: Traffic; now: Traffic; silentSec: number }>): MemberStep[] {
  const byMember = new Map<number, MemberStep>();
  const entry = (id: number) => byMember.get(id) ?? { member: id, slots: [], computeSec: 0, waitSec: 0, sentBytes: 0, receivedBytes: 0 };
  for (const o of outcomes) {
    if (!o.result) continue;
    const m = entry(o.member.info.id);
    m.slots.push(...o.slots);
    const compute = Math.max(...o.result.map((r) => r.computeMs)) / 1000;
    m.computeSec = Math.max(m.computeSec, compute);
    m.waitSec = Math.max(m.waitSec, (o.doneAt - o.sentAt) / 1000 - compute);
    byMember.set(m.member, m);
  }
  for (const n of nodes) {
    const m = entry(n.id);
    const before = n.before ?? { sent: 0, received: 0 };
    // The node's view: what it sent is what the coordinator received.
    m.sentBytes = n.now.received - before.received;
    m.receivedBytes = n.now.sent - before.sent;
    m.lastHeardSec = n.silentSec;
    byMember.set(n.id, m);
  }
  return [...byMember.values()].sort((a, b) => a.member - b.member);
}

/**
 * Bytes the local threads copied (see README): each thread's weights upload (all but the
 * embeddings, read in place), each slot's dense gradient out of tfjs and its embedding rows,
 * the reduction's reads of the other slots, and the sum's copy into the reduced gradient.
 */
export function localBytes(layout: ParamLayout, threads: number, outcomes: Array<TaskOutcome<SlotStats>>): number {
  const local = outcomes.flatMap((o) => o.result ?? []);
  if (local.length === 0) return 0;
  const dense = layout.totalSize - layout.tokEmb.size;
  const rows = local.reduce((n, r) => n + r.tokens, 0) * layout.config.embDim;
  return 4 * (Math.min(local.length, threads) * (dense - layout.posEmb.size) + local.length * dense + rows + (local.length - 1) * dense + dense);
}
