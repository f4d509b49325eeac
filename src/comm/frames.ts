/**
 * Binary frames on the WebSocket. Byte 0 says what follows: a control message (msgpack), or a
 * tensor frame with a fixed 32-byte little-endian header and a raw float32 (or bfloat16) payload,
 * so tensors never pass through msgpack and their payload is 4-byte aligned.
 *
 * header: u8 type, u8 dtype, u16 0, then u32 fields a..f, u32 0:
 *   partial       node -> coordinator  a task, b lo, c hi, d piece               dense piece of a subtree's sum
 *   partial-rows  node -> coordinator  a task, b lo, c hi, d part, e parts, f rows  token-embedding rows
 *   reduced       coordinator -> node  a step, d piece                            dense piece of the step's sum
 *   reduced-rows  coordinator -> node  a step, d part, e parts, f rows           its token-embedding rows
 *   state         coordinator -> node  a version, b tensor (stateTensors: 0 weights, 1 m, 2 v), d piece
 *   peer          coordinator -> node  a step, b lo, c hi, d piece               dense piece of the other half's sum
 *
 * A node whose slots are one half of the reduction tree gets the other half's partial sum (a peer
 * frame) as soon as it arrives and adds its own, instead of waiting for the step's sum (see Downstream).
 */
import { Packr } from 'msgpackr';
import type { AdamWMoments } from '../math/adamw.js';
import { fromBf16, toBf16 } from '../math/bf16.js';
import { firstNonFinite, type SparseRows } from '../math/reduce.js';
import type { TreeNode } from '../math/tree.js';
import type { WireFormat } from './protocol.js';

export const FRAME = { control: 1, partial: 2, partialRows: 3, reduced: 4, reducedRows: 5, state: 6, peer: 7 } as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];
export const HEADER_BYTES = 32;
/** Floats per streamed gradient piece: 4 MiB frames, and the bound on any frame's size. */
export const PIECE_FLOATS = 1 << 20;
/** Control messages are kept under this size (task messages are split to fit). */
export const CONTROL_BYTES = 2 ** 21;
/** The largest legal message: a piece of floats and its header, or a control message. */
export const maxPayload = (pieceFloats: number): number => Math.max(HEADER_BYTES + 4 * pieceFloats, CONTROL_BYTES) + 1024;
/** Bytes a sample takes in a task message: its input and target token ids, and some framing. */
export const sampleBytes = (contextLength: number): number => 8 * contextLength + 64;
const DTYPE: Record<WireFormat, number> = { fp32: 0, bf16: 1 };

/** A malformed or unexpected message: the connection that sent it is closed. */
export class ProtocolError extends Error {
  override readonly name: string = 'ProtocolError';
}

/** A NaN or infinity in a gradient: a bad node, or (if it happens again elsewhere) a diverged run. */
export class NonFiniteError extends ProtocolError {
  override readonly name = 'NonFiniteError';
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function controlFrame(message: object): Buffer {
  const body = packr.pack(message);
  const out = Buffer.allocUnsafe(1 + body.length);
  out[0] = FRAME.control;
  body.copy(out, 1);
  return out;
}

export interface TensorHeader {
  type: FrameType;
  wire: WireFormat;
  a: number;
  b: number;
  c: number;
  d: number;
  e: number;
  f: number;
}

export type DecodedFrame =
  | { type: typeof FRAME.control; message: unknown }
  | { type: Exclude<FrameType, typeof FRAME.control>; header: TensorHeader; payload: Buffer };

function writeHeader(buf: Buffer, h: TensorHeader): void {
  buf.writeUInt8(h.type, 0);
  buf.writeUInt8(DTYPE[h.wire], 1);
  buf.writeUInt16LE(0, 2);
  [h.a, h.b, h.c, h.d, h.e, h.f, 0].forEach((v, i) => buf.writeUInt32LE(v, 4 + 4 * i));
}

/**
 * Reusable memory for tensor frames, each of `bytes`. A frame queued on a socket can wait for
 * seconds (a 1 Gbit/s link needs 4 s for a node's 0.5 GB), so a fresh buffer per frame reaches
 * V8's old generation, and every 64 MB of such memory starts a full mark of the heap: allocating
 * each frame anew cost more CPU than moving it. The pool grows to the frames in flight at once.
 */
export class FramePool {
  private readonly free: ArrayBuffer[] = [];

  constructor(readonly bytes: number) {}

  take(): ArrayBuffer {
    return this.free.pop() ?? new ArrayBuffer(this.bytes);
  }

  /** Takes back memory from take(); only once nothing reads it any more. */
  give(buffer: ArrayBufferLike): void {
    if (buffer.byteLength === this.bytes && buffer instanceof ArrayBuffer) this.free.push(buffer);
  }

  /** A copy of `values` in pool memory. */
  copy(values: Float32Array): Float32Array {
    const out = new Float32Array(this.take(), 0, values.length);
    out.set(values);
    return out;
  }
}

/** Frame memory for pieces of `pieceFloats` floats. */
export const framePool = (pieceFloats: number): FramePool => new FramePool(HEADER_BYTES + 4 * pieceFloats);

/** A dense tensor frame: `values` as float32 or rounded to bfloat16, in `into` when given (see FramePool). */
export function denseFrame(h: Omit<TensorHeader, 'f'>, values: Float32Array, into?: ArrayBuffer): Buffer {
  const bytes = h.wire === 'bf16' ? 2 : 4;
  const size = HEADER_BYTES + values.length * bytes;
  if (into && into.byteLength < size) throw new Error(`denseFrame: ${size} bytes do not fit in ${into.byteLength}`);
  const buf = into ? Buffer.from(into, 0, size) : Buffer.allocUnsafe(size);
  writeHeader(buf, { ...h, f: values.length });
  const at = buf.byteOffset + HEADER_BYTES;
  if (h.wire === 'bf16') toBf16(values, new Uint16Array(buf.buffer, at, values.length));
  else new Float32Array(buf.buffer, at, values.length).set(values);
  return buf;
}

/** The tensors of a run's state in the order state frames number them (header field b). */
export const stateTensors = (weights: Float32Array, moments: AdamWMoments): Float32Array[] => [weights, moments.m, moments.v];

/** A frame of token-embedding rows (ids, then their float32 values). */
export function rowsFrame(h: Omit<TensorHeader, 'f' | 'wire'>, rows: SparseRows): Buffer {
  const n = rows.rows.length;
  const buf = Buffer.allocUnsafe(HEADER_BYTES + 4 * n + 4 * rows.values.length);
  writeHeader(buf, { ...h, wire: 'fp32', f: n });
  new Int32Array(buf.buffer, buf.byteOffset + HEADER_BYTES, n).set(rows.rows);
  new Float32Array(buf.buffer, buf.byteOffset + HEADER_BYTES + 4 * n, rows.values.length).set(rows.values);
  return buf;
}

/** Splits rows into frames of at most `perFrame` rows (at least one frame, possibly empty). */
export function splitRows(rows: SparseRows, perFrame: number, width: number): SparseRows[] {
  const parts: SparseRows[] = [];
  for (let i = 0; i === 0 || i < rows.rows.length; i += perFrame) {
    const j = Math.min(rows.rows.length, i + perFrame);
    parts.push({ rows: rows.rows.subarray(i, j), values: rows.values.subarray(i * width, j * width) });
  }
  return parts;
}

/** A piece of a step's reduced gradient, for the nodes. */
export function reducedFrame(step: number, piece: number, values: Float32Array, wire: WireFormat, into?: ArrayBuffer): Buffer {
  return denseFrame({ type: FRAME.reduced, wire, a: step, b: 0, c: 0, d: piece, e: 0 }, values, into);
}

/** A piece of the partial sum of subtree `node` (the other half of the tree), for a node that owns one half. */
export function peerFrame(step: number, node: TreeNode, piece: number, values: Float32Array, wire: WireFormat, into?: ArrayBuffer): Buffer {
  return denseFrame({ type: FRAME.peer, wire, a: step, b: node[0], c: node[1], d: piece, e: 0 }, values, into);
}

/** Rows at most this many to a frame keep every frame within a piece's size. */
export const rowsPerFrame = (pieceFloats: number, width: number): number => Math.max(1, Math.floor(pieceFloats / (width + 1)));

/** A step's reduced token-embedding rows, for the nodes. */
export function reducedRowsFrames(step: number, rows: SparseRows, width: number, pieceFloats: number): Buffer[] {
  const parts = splitRows(rows, rowsPerFrame(pieceFloats, width), width);
  return parts.map((p, i) => rowsFrame({ type: FRAME.reducedRows, a: step, b: 0, c: 0, d: i, e: parts.length }, p));
}

export function decodeFrame(data: Buffer): DecodedFrame {
  if (data.length < 1) throw new ProtocolError('empty frame');
  const type = data[0]!;
  if (type === FRAME.control) {
    try {
      return { type, message: packr.unpack(data.subarray(1)) };
    } catch (err) {
      throw new ProtocolError(`undecodable control message (${(err as Error).message})`);
    }
  }
  if (type < FRAME.partial || type > FRAME.peer) throw new ProtocolError(`unknown frame type ${type}`);
  if (data.length < HEADER_BYTES) throw new ProtocolError(`short frame: ${data.length} bytes, less than its ${HEADER_BYTES}-byte header`);
  const dtype = data.readUInt8(1);
  if (dtype > 1 || data.readUInt16LE(2) !== 0 || data.readUInt32LE(28) !== 0) throw new ProtocolError('malformed frame header');
  const [a, b, c, d, e, f] = [4, 8, 12, 16, 20, 24].map((o) => data.readUInt32LE(o)) as [number, number, number, number, number, number];
  return {
    type: type as Exclude<FrameType, typeof FRAME.control>,
    header: { type: type as FrameType, wire: dtype === 1 ? 'bf16' : 'fp32', a, b, c, d, e, f },
    payload: data.subarray(HEADER_BYTES),
  };
}

/**
 * The float32 values of a dense frame's payload, checked: exactly `count` values in the expected
 * format, all finite. Shares memory with the frame when aligned float32.
 */
export function denseValues(h: TensorHeader, payload: Buffer, count: number, wire: WireFormat): Float32Array {
  if (h.wire !== wire) throw new ProtocolError(`tensor frame in ${h.wire}, the run uses ${wire}`);
  const bytes = wire === 'bf16' ? 2 : 4;
  if (h.f !== count || payload.length !== count * bytes) {
    throw new ProtocolError(`tensor frame of ${payload.length} bytes (${h.f} values), expected ${count} values`);
  }
  let values: Float32Array;
  if (wire === 'bf16') {
    const raw = new Uint16Array(count);
    Buffer.from(raw.buffer).set(payload);
    values = fromBf16(raw);
  } else if (payload.byteOffset % 4 === 0) {
    values = new Float32Array(payload.buffer, payload.byteOffset, count);
  } else {
    values = new Float32Array(count);
    Buffer.from(values.buffer).set(payload);
  }
  requireFinite(values);
  return values;
}

/** The rows of a rows frame, checked: ids sorted, distinct and below `limit`, values finite. */
export function rowValues(h: TensorHeader, payload: Buffer, width: number, limit: number): SparseRows {
  const n = h.f;
  if (h.wire !== 'fp32' || payload.length !== 4 * n * (1 + width)) {
    throw new ProtocolError(`rows frame of ${payload.length} bytes, expected ${n} rows of ${width} float32 values`);
  }
  const copy = Buffer.alloc(payload.length);
  payload.copy(copy);
  const rows = new Int32Array(copy.buffer, copy.byteOffset, n);
  const values = new Float32Array(copy.buffer, copy.byteOffset + 4 * n, n * width);
  for (let i = 0; i < n; i++) {
    if (rows[i]! < 0 || rows[i]! >= limit || (i > 0 && rows[i]! <= rows[i - 1]!)) {
      throw new ProtocolError(`rows frame: row ids must be increasing and below ${limit}`);
    }
  }
  requireFinite(values);
  return { rows, values };
}

/**
 * Puts the rows frames of one sum back together: parts in order, at most `maxParts` of them, row
 * ids increasing across parts, below `limit`, and (when given) among `allowed`.
 */
export class RowsAssembler {
  private readonly parts: SparseRows[] = [];
  private expected = 0;
  done = false;

  constructor(private readonly width: number, private readonly limit: number, private readonly maxParts: number, private readonly allowed?: Set<number>) {}

  /** Takes one frame; returns all the rows once the last part is in. */
  add(h: TensorHeader, payload: Buffer): SparseRows | null {
    if (this.done || h.e < 1 || h.e > this.maxParts || h.d !== this.parts.length || (this.expected !== 0 && h.e !== this.expected)) {
      throw new ProtocolError(`rows frame ${h.d} of ${h.e} out of order (at most ${this.maxParts} frames)`);
    }
    const rows = rowValues(h, payload, this.width, this.limit);
    if (rows.rows.length === 0 && h.e > 1) throw new ProtocolError('an empty rows frame in a multi-frame sum');
    const last = this.parts.at(-1)?.rows;
    if (last?.length && rows.rows.length && rows.rows[0]! <= last[last.length - 1]!) throw new ProtocolError('rows frames must continue in increasing row order');
    if (this.allowed) for (const r of rows.rows) if (!this.allowed.has(r)) throw new ProtocolError(`row ${r} is not a token of these slots`);
    this.expected = h.e;
    this.parts.push(rows);
    if (this.parts.length < this.expected) return null;
    this.done = true;
    const all = { rows: new Int32Array(this.parts.reduce((n, p) => n + p.rows.length, 0)), values: new Float32Array(this.parts.reduce((n, p) => n + p.values.length, 0)) };
    let r = 0;
    for (const p of this.parts) {
      all.rows.set(p.rows, r);
      all.values.set(p.values, r * this.width);
      r += p.rows.length;
    }
    return all;
  }
}

function requireFinite(values: Float32Array): void {
  const i = firstNonFinite(values);
  if (i >= 0) throw new NonFiniteError(`non-finite value ${values[i]} at index ${i} of a tensor frame`);
}
