/**
 * The canonical reduction tree over a step's slots. A step's gradient is the sum of its slot
 * gradients in this one fixed order, whichever thread, process or machine computed each slot,
 * so every placement of the same slots gives the same bits. Node [lo, hi) splits at
 * lo + ceil((hi - lo) / 2); a worker that owns a whole subtree sends one partial sum for it.
 */
export type TreeNode = readonly [lo: number, hi: number];

export function treeSplit(lo: number, hi: number): number {
  return lo + Math.ceil((hi - lo) / 2);
}

export const nodeKey = ([lo, hi]: TreeNode): string => `${lo}:${hi}`;

/**
 * The largest subtrees whose slots all lie in `slots` (a subset of [0, slotCount)), left to right:
 * the partial sums a worker that owns these slots sends.
 */
export function maximalSubtrees(slots: Iterable<number>, slotCount: number): TreeNode[] {
  const owned = new Set(slots);
  const out: TreeNode[] = [];
  const visit = (lo: number, hi: number): void => {
    let all = true;
    let any = false;
    for (let s = lo; s < hi; s++) {
      if (owned.has(s)) any = true;
      else all = false;
    }
    if (all) out.push([lo, hi]);
    else if (any) {
      const mid = treeSplit(lo, hi);
      visit(lo, mid);
      visit(mid, hi);
    }
  };
  visit(0, slotCount);
  return out;
}

/**
 * Sums partials in tree order over `root`: `partial(node)` returns a stored partial sum for that
 * node, or undefined to descend into its children. `add(a, b)` returns a + b (it may reuse a).
 */
export function treeSum<T>(root: TreeNode, partial: (node: TreeNode) => T | undefined, add: (a: T, b: T) => T): T {
  const sum = (lo: number, hi: number): T => {
    const stored = partial([lo, hi]);
    if (stored !== undefined) return stored;
    if (hi - lo === 1) throw new Error(`treeSum: slot ${lo} has no partial sum`);
    const mid = treeSplit(lo, hi);
    return add(sum(lo, mid), sum(mid, hi));
  };
  return sum(root[0], root[1]);
}

/**
 * The subtree whose partial sum, added to `own`'s, gives the sum over all `slotCount` slots: the
 * root's other child when `own` is one of the root's children, else null.
 */
export function rootComplement(own: TreeNode, slotCount: number): TreeNode | null {
  if (slotCount < 2) return null;
  const mid = treeSplit(0, slotCount);
  if (own[0] === 0 && own[1] === mid) return [mid, slotCount];
  if (own[0] === mid && own[1] === slotCount) return [0, mid];
  return null;
}
