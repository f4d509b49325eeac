/**
 * The unit of gradient transfer and reduction: a contiguous range of the flat layout, at most
 * `maxFloats` long, within one region (a part of the gradient the backward completes at once).
 * Pieces are numbered in the order the backward produces them, so they can be sent while the
 * backward continues.
 */
export interface Piece {
  index: number;
  region: number;
  start: number;
  end: number;
}

export function gradientPieces(regions: ReadonlyArray<readonly [number, number]>, maxFloats: number): Piece[] {
  const pieces: Piece[] = [];
  regions.forEach(([start, end], region) => {
    for (let s = start; s < end; s += maxFloats) pieces.push({ index: pieces.length, region, start: s, end: Math.min(end, s + maxFloats) });
  });
  return pieces;
}
