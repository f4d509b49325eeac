import type { ModelConfig } from './config.js';

/**
 * How a parameter is initialised (PyTorch defaults) and stored: Linear weights [in, out]; out_head,
 * the vocabulary head, as its column blocks one after the other (`headBlocks`).
 */
export type ParamKind = 'embedding' | 'linear' | 'headLinear' | 'bias' | 'normScale' | 'normShift';

export interface ParamSpec {
  /** PyTorch state_dict name of the reference GPTModel. */
  name: string;
  /** Shape as stored here. Linear weights are kept [in, out] (the transpose of PyTorch's). */
  shape: number[];
  kind: ParamKind;
  /** Fan-in of the Linear layer this weight or bias belongs to (sets the init bound). */
  fanIn: number;
  offset: number;
  size: number;
}

export interface BlockParams<T> {
  norm1Scale: T;
  norm1Shift: T;
  wQuery: T;
  wKey: T;
  wValue: T;
  bQuery: T | null;
  bKey: T | null;
  bValue: T | null;
  wOut: T;
  bOut: T;
  norm2Scale: T;
  norm2Shift: T;
  wFf1: T;
  bFf1: T;
  wFf2: T;
  bFf2: T;
}

export interface ParamLayout {
  config: ModelConfig;
  params: ParamSpec[];
  byName: Map<string, ParamSpec>;
  totalSize: number;
  tokEmb: ParamSpec;
  posEmb: ParamSpec;
  blocks: BlockParams<ParamSpec>[];
  /** [start, end) of each transformer block's parameters in the flat buffer (contiguous). */
  blockRanges: Array<[number, number]>;
  finalNormScale: ParamSpec;
  finalNormShift: ParamSpec;
  outHead: ParamSpec;
}

/** The fixed order and offsets of every parameter in the one flat Float32Array. */
export function buildLayout(config: ModelConfig): ParamLayout {
  const { vocabSize: V, contextLength: T, embDim: D, nLayers: L, qkvBias } = config;
  const params: ParamSpec[] = [];
  let offset = 0;
  const add = (name: string, shape: number[], kind: ParamKind, fanIn = 0): ParamSpec => {
    const size = shape.reduce((a, b) => a * b, 1);
    const spec: ParamSpec = { name, shape, kind, fanIn, offset, size };
    offset += size;
    params.push(spec);
    return spec;
  };

  const tokEmb = add('tok_emb.weight', [V, D], 'embedding');
  const posEmb = add('pos_emb.weight', [T, D], 'embedding');
  const blocks: BlockParams<ParamSpec>[] = [];
  const blockRanges: Array<[number, number]> = [];
  for (let i = 0; i < L; i++) {
    const p = `trf_blocks.${i}.`;
    const start = offset;
    const norm1Scale = add(`${p}norm1.scale`, [D], 'normScale');
    const norm1Shift = add(`${p}norm1.shift`, [D], 'normShift');
    const wQuery = add(`${p}att.W_query.weight`, [D, D], 'linear', D);
    const bQuery = qkvBias ? add(`${p}att.W_query.bias`, [D], 'bias', D) : null;
    const wKey = add(`${p}att.W_key.weight`, [D, D], 'linear', D);
    const bKey = qkvBias ? add(`${p}att.W_key.bias`, [D], 'bias', D) : null;
    const wValue = add(`${p}att.W_value.weight`, [D, D], 'linear', D);
    const bValue = qkvBias ? add(`${p}att.W_value.bias`, [D], 'bias', D) : null;
    const wOut = add(`${p}att.out_proj.weight`, [D, D], 'linear', D);
    const bOut = add(`${p}att.out_proj.bias`, [D], 'bias', D);
    const norm2Scale = add(`${p}norm2.scale`, [D], 'normScale');
    const norm2Shift = add(`${p}norm2.shift`, [D], 'normShift');
    const wFf1 = add(`${p}ff.layers.0.weight`, [D, 4 * D], 'linear', D);
    const bFf1 = add(`${p}ff.layers.0.bias`, [4 * D], 'bias', D);
    const wFf2 = add(`${p}ff.layers.2.weight`, [4 * D, D], 'linear', 4 * D);
    const bFf2 = add(`${p}ff.layers.2.bias`, [D], 'bias', 4 * D);
    blocks.push({
      norm1Scale, norm1Shift, wQuery, wKey, wValue, bQuery, bKey, bValue, wOut, bOut,
      norm2Scale, norm2Shift, wFf1, bFf1, wFf2, bFf2,
    });
    blockRanges.push([start, offset]);
  }
  const finalNormScale = add('final_norm.scale', [D], 'normScale');
  const finalNormShift = add('final_norm.shift', [D], 'normShift');
  const outHead = add('out_head.weight', [D, V], 'headLinear', D);

  return {
    config, params, byName: new Map(params.map((p) => [p.name, p])), totalSize: offset,
    tokEmb, posEmb, blocks, blockRanges, finalNormScale, finalNormShift, outHead,
  };
}

export function paramView(flat: Float32Array, spec: ParamSpec): Float32Array {
  return flat.subarray(spec.offset, spec.offset + spec.size);
}

/** Width of the vocabulary head's column blocks: wide single matmuls run at half speed on wasm. */
export const HEAD_BLOCK = 4096;

/** The vocabulary ids [start, end) of each column block of out_head. */
export function headBlockRanges(vocabSize: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (let s = 0; s < vocabSize; s += HEAD_BLOCK) ranges.push([s, Math.min(vocabSize, s + HEAD_BLOCK)]);
  return ranges;
}

/**
 * out_head's column blocks as stored: block [start, end) is a row-major [D, end - start] matrix at
 * `offset`, right after the blocks before it. So each block's weights and gradient are one
 * contiguous range, and the gradient can leave block by block as the head's backward makes it.
 */
export function headBlocks(layout: ParamLayout): Array<{ start: number; end: number; offset: number }> {
  const D = layout.config.embDim;
  return headBlockRanges(layout.config.vocabSize).map(([start, end]) => ({ start, end, offset: layout.outHead.offset + D * start }));
}

/** out_head as one [D, V] row-major matrix from its blocks (`toBlocks` = false), or the other way. */
export function convertHead(src: Float32Array, D: number, V: number, toBlocks: boolean, out: Float32Array = new Float32Array(D * V)): Float32Array {
  for (const [s, e] of headBlockRanges(V)) {
    const w = e - s;
    for (let r = 0; r < D; r++) {
      const blocked = D * s + r * w;
      const matrix = r * V + s;
      if (toBlocks) out.set(src.subarray(matrix, matrix + w), blocked);
      else out.set(src.subarray(blocked, blocked + w), matrix);
    }
  }
  return out;
}

/**
 * The dense gradient's regions in the order the backward completes them: out_head's column
 * blocks, the final norm, blocks L-1 .. 0, then the position embedding. The token embedding's
 * sparse rows complete with the last region.
 */
export function gradientRegions(layout: ParamLayout): Array<[number, number]> {
  const D = layout.config.embDim;
  const head = headBlocks(layout).map(({ start, end, offset }): [number, number] => [offset, offset + D * (end - start)]);
  const blocks = [...layout.blockRanges].reverse();
  return [...head, [layout.finalNormScale.offset, layout.outHead.offset], ...blocks, [layout.posEmb.offset, layout.posEmb.offset + layout.posEmb.size]];
}
