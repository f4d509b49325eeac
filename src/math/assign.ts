/** Which member computes which slots of a step: placement never changes the result, only speed. */
export interface Capacity {
  id: number;
  threads: number;
}

/**
 * Contiguous slot ranges, in member order, sized in proportion to each member's threads (largest
 * remainder; ties to the earlier member). Contiguous ranges make few reduction-tree partials.
 */
export function assignSlots(slotCount: number, members: Capacity[]): Map<number, number[]> {
  const total = members.reduce((n, m) => n + m.threads, 0);
  if (total <= 0) throw new Error('assignSlots: no member has threads');
  const exact = members.map((m) => (slotCount * m.threads) / total);
  const counts = exact.map(Math.floor);
  let left = slotCount - counts.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((x, i) => ({ i, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of byRemainder) {
    if (left-- <= 0) break;
    counts[i]! += 1;
  }
  const out = new Map<number, number[]>();
  let next = 0;
  members.forEach((m, i) => {
    out.set(m.id, Array.from({ length: counts[i]! }, (_, k) => next + k));
    next += counts[i]!;
  });
  return out;
}

/**
 * Gives slots that lost their worker to the members with the least work per thread, one slot at
 * a time (ties to the lower id). `load` maps member id to the slots it already holds this step.
 */
export function reassignSlots(orphans: number[], members: Capacity[], load: Map<number, number>): Map<number, number[]> {
  if (members.length === 0) throw new Error('reassignSlots: no member left');
  const held = new Map(members.map((m) => [m.id, load.get(m.id) ?? 0]));
  const out = new Map<number, number[]>();
  for (const slot of orphans) {
    let best = members[0]!;
    for (const m of members) {
      const cost = (held.get(m.id)! + 1) / m.threads;
      const bestCost = (held.get(best.id)! + 1) / best.threads;
      if (cost < bestCost || (cost === bestCost && m.id < best.id)) best = m;
    }
    held.set(best.id, held.get(best.id)! + 1);
    out.set(best.id, [...(out.get(best.id) ?? []), slot]);
  }
  return out;
}
