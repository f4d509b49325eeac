import { reassignSlots } from '../math/assign.js';
import { errorMessage } from '../util/errors.js';
import { WorkerError } from './group.js';
import type { Member } from './member.js';
import type { Membership } from './membership.js';
import type { RemoteNode } from './remote.js';
import type { TaskOutcome } from './step-stats.js';

export function divergence(step: number, slots: number[]): WorkerError {
  return new WorkerError('the run', `step ${step}`, `slot${slots.length === 1 ? '' : 's'} ${slots.join(', ')} gave a NaN or infinite gradient: it diverged (try a lower --lr)`);
}

/** Starts one task: `slots` on `member`, numbered `task`; resolves with one result per slot. */
type StartTask<T> = (member: Member, slots: number[], task: number) => Promise<T[]>;

/**
 * Runs `slots` of `step` on the live members as placed, and re-places the slots of any node that
 * fails (on the members with the least work per thread) until every slot has a result; `onDrop`
 * hears of each failed task first. A failure of the local threads is fatal, and so is a NaN or
 * infinity from a second node: one such node is that node's fault, two are the run's.
 */
export async function runSlots<T extends { slot: number }>(
  members: Membership, step: number, slots: number[], start: StartTask<T>, onDrop: (task: number) => void,
): Promise<{ results: Map<number, T>; outcomes: Array<TaskOutcome<T>> }> {
  const results = new Map<number, T>();
  const outcomes: Array<TaskOutcome<T>> = [];
  const inflight = new Map<number, { member: Member; slots: number[]; outcome: Promise<TaskOutcome<T>> }>();
  const launch = (member: Member, mine: number[]) => {
    const task = members.newTask();
    const sentAt = performance.now();
    const done = (o: { result?: T[]; error?: unknown }): TaskOutcome<T> => ({ member, task, slots: mine, sentAt, doneAt: performance.now(), ...o });
    const outcome = start(member, mine, task).then((result) => done({ result }), (error: unknown) => done({ error }));
    inflight.set(task, { member, slots: mine, outcome });
  };
  const wanted = new Set(slots);
  await members.someone(step);
  const nonFinite = new Set<number>();
  for (const [id, mine] of members.placement) {
    const own = mine.filter((s) => wanted.has(s));
    if (own.length > 0) launch(members.member(id), own);
  }
  while (inflight.size > 0) {
    const o = await Promise.race([...inflight.values()].map((t) => t.outcome));
    inflight.delete(o.task);
    outcomes.push(o);
    if (o.result) {
      for (const r of o.result) results.set(r.slot, r);
      continue;
    }
    if (o.member === members.local) throw o.error;
    onDrop(o.task);
    members.lose(o.member as RemoteNode, errorMessage(o.error));
    // Nodes still in flight may have failed the same way already (they all diverge at once).
    for (const m of [o.member, ...[...inflight.values()].map((t) => t.member)]) {
      if (m !== members.local && (m as RemoteNode).sentNonFinite) nonFinite.add(m.info.id);
    }
    if (nonFinite.size >= 2) throw divergence(step, o.slots);
    const live = await members.someone(step);
    const load = new Map<number, number>();
    for (const t of inflight.values()) load.set(t.member.info.id, (load.get(t.member.info.id) ?? 0) + t.slots.length);
    for (const [id, moved] of reassignSlots(o.slots, live.map((m) => ({ id: m.info.id, threads: m.info.threads })), load)) {
      const m = members.member(id);
      members.emit({ event: 'reassign', step, member: id, host: m.info.host, threads: m.info.threads, slots: moved });
      launch(m, moved);
    }
  }
  return { results, outcomes };
}
