import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WorkerError, type MemberEvent, type MemberInfo } from '../src/comm/group.js';
import type { LocalMember } from '../src/comm/member.js';
import { Membership } from '../src/comm/membership.js';
import { runSlots } from '../src/comm/run-slots.js';
import type { NodeServer } from '../src/comm/server.js';

/** What placement and membership use of a member, with a scripted outcome per task. */
class FakeMember {
  closedWith: string | null = null;
  leftCleanly = false;
  sentNonFinite = false;
  readonly tasks: Array<{ slots: number[]; task: number }> = [];
  private closeHandler: ((reason: string) => void) | null = null;

  constructor(readonly info: MemberInfo, private readonly outcome: (slots: number[]) => Promise<void> = async () => {}) {}

  async run(slots: number[], task: number): Promise<Array<{ slot: number; by: number }>> {
    this.tasks.push({ slots, task });
    await this.outcome(slots);
    return slots.map((slot) => ({ slot, by: this.info.id }));
  }

  onClose(handler: (reason: string) => void): void {
    this.closeHandler = handler;
  }

  close(reason: string): void {
    this.closedWith ??= reason;
    this.closeHandler?.(reason);
  }
}

const info = (id: number, kind: 'local' | 'node', threads = 1): MemberInfo => ({ id, kind, host: kind === 'local' ? 'local' : `host${id}`, threads, backend: 'cpu', kernels: 'js' });

/** A server whose nodes have all joined already; a wait for more times out at once. */
function serverWith(nodes: FakeMember[]): NodeServer {
  let pending = [...nodes];
  const server = {
    takeJoined: () => {
      const joined = pending;
      pending = [];
      return joined;
    },
    waitForJoin: async () => pending.length > 0,
  };
  return server as unknown as NodeServer;
}

async function groupOf(local: FakeMember | null, nodes: FakeMember[], slots: number): Promise<{ group: Membership; events: MemberEvent[] }> {
  const group = new Membership({ local: local as unknown as LocalMember | null, server: serverWith(nodes), waitTimeoutSec: 0, welcome: async () => {} });
  const events: MemberEvent[] = [];
  group.onEvent((e) => events.push(e));
  await group.admit(0);
  group.fixSlots(slots);
  return { group, events };
}

const start = (member: unknown, slots: number[], task: number) => (member as FakeMember).run(slots, task);

test('slots are placed in proportion to threads, in member order', async () => {
  const local = new FakeMember(info(0, 'local', 2));
  const nodes = [new FakeMember(info(1, 'node', 1)), new FakeMember(info(2, 'node', 1))];
  const { group, events } = await groupOf(local, nodes, 4);
  assert.deepEqual([...group.placement], [[0, [0, 1]], [1, [2]], [2, [3]]]);
  assert.deepEqual(events.map((e) => `${e.event} ${e.member}`), ['join 1', 'join 2']);
  assert.equal(group.description(), '2 nodes (2 threads) + 2 local threads, 4 slots per step');
  const { results } = await runSlots(group, 0, [0, 1, 2, 3], start, () => {});
  assert.deepEqual([...results.keys()].sort(), [0, 1, 2, 3]);
  assert.deepEqual([...results.values()].map((r) => r.by).sort(), [0, 0, 1, 2]);
});

test("a failed node's slots go to the least loaded members within the same call", async () => {
  const local = new FakeMember(info(0, 'local', 1));
  const failing = new FakeMember(info(1, 'node', 2), async () => {
    throw new Error('connection closed');
  });
  const healthy = new FakeMember(info(2, 'node', 1));
  const { group, events } = await groupOf(local, [failing, healthy], 4);
  const dropped: number[] = [];
  const { results, outcomes } = await runSlots(group, 7, [0, 1, 2, 3], start, (task) => dropped.push(task));
  assert.deepEqual([...results.keys()].sort(), [0, 1, 2, 3]);
  // Node 1 held slots 1 and 2; each survivor then holds one more.
  assert.equal(results.get(1)!.by !== 1 && results.get(2)!.by !== 1, true);
  assert.deepEqual(dropped, [failing.tasks[0]!.task]);
  assert.equal(failing.closedWith, 'connection closed');
  assert.deepEqual(group.nodes.map((n) => n.info.id), [2]);
  const lost = events.find((e) => e.event === 'lost');
  assert.equal(lost?.member, 1);
  assert.deepEqual(events.filter((e) => e.event === 'reassign').flatMap((e) => e.slots).sort(), [1, 2]);
  assert.equal(outcomes.filter((o) => o.error).length, 1);
  // Every task has its own number, so a failed task's late frames are never taken for a new one's.
  const tasks = [local, failing, healthy].flatMap((m) => m.tasks.map((t) => t.task));
  assert.equal(new Set(tasks).size, tasks.length);
});

test('a NaN from one node is its fault; from two, the run has diverged', async () => {
  const nan = (m: () => FakeMember) => async () => {
    m().sentNonFinite = true;
    throw new Error('a NaN gradient');
  };
  const one: FakeMember[] = [];
  one.push(new FakeMember(info(1, 'node'), nan(() => one[0]!)), new FakeMember(info(2, 'node')));
  const first = await groupOf(null, one, 2);
  const { results } = await runSlots(first.group, 0, [0, 1], start, () => {});
  assert.deepEqual([...results.values()].map((r) => r.by), [2, 2]);

  const two: FakeMember[] = [];
  two.push(new FakeMember(info(1, 'node'), nan(() => two[0]!)), new FakeMember(info(2, 'node'), nan(() => two[1]!)), new FakeMember(info(3, 'node')));
  const second = await groupOf(null, two, 3);
  await assert.rejects(runSlots(second.group, 5, [0, 1, 2], start, () => {}), (err: Error) => err instanceof WorkerError && /diverged/.test(err.message));
});

test('a failure of the local threads is fatal; no worker left ends the wait with a clear error', async () => {
  const local = new FakeMember(info(0, 'local'), async () => {
    throw new Error('out of memory');
  });
  const { group } = await groupOf(local, [new FakeMember(info(1, 'node'))], 2);
  await assert.rejects(runSlots(group, 0, [0, 1], start, () => {}), /out of memory/);

  const lone = new FakeMember(info(1, 'node'), async () => {
    throw new Error('connection closed');
  });
  const alone = await groupOf(null, [lone], 1);
  await assert.rejects(runSlots(alone.group, 3, [0], start, () => {}), (err: Error) => err instanceof WorkerError && /all workers were lost and none joined within 0 s/.test(err.message));
  assert.equal(alone.events.at(-1)?.event, 'waiting');
});
