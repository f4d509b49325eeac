import { readFileSync } from 'node:fs';
import { writeFileAtomic, writeFileDurable } from '../util/files.js';
import { UsageError } from '../util/errors.js';

/**
 * The safetensors format: an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {dtype, shape, data_offsets: [begin, end)} (offsets into the data that follows)
 * plus an optional "__metadata__" of strings, then the data. Only F32 tensors are written here;
 * reading validates everything the header claims against the file.
 */
export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, NamedTensor>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 2 ** 20;

function bad(path: string, problem: string): UsageError {
  return new UsageError(`${path}: not a valid safetensors file: ${problem}`);
}

export function encodeSafetensors(tensors: Array<[string, NamedTensor]>, metadata: Record<string, string> = {}): Buffer[] {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.length * 4;
    if (t.shape.reduce((a, b) => a * b, 1) !== t.data.length) throw new Error(`${name}: shape ${t.shape} does not match ${t.data.length} values`);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keeps the data 8-byte aligned
  const head = Buffer.alloc(8 + json.length);
  head.writeBigUInt64LE(BigInt(json.length), 0);
  head.write(json, 8, 'utf8');
  return [head, ...tensors.map(([, t]) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
}

export function writeSafetensors(path: string, tensors: Array<[string, NamedTensor]>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

/** Writes a safetensors file in place, durably: for files inside a directory that is renamed into place as a whole. */
export function writeSafetensorsDurable(path: string, tensors: Array<[string, NamedTensor]>, metadata: Record<string, string> = {}): void {
  writeFileDurable(path, encodeSafetensors(tensors, metadata));
}

export function decodeSafetensors(bytes: Buffer, path = 'safetensors'): SafetensorsFile {
  if (bytes.length < 8) throw bad(path, `file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const headerLength = bytes.readBigUInt64LE(0);
  if (headerLength > BigInt(Math.min(MAX_HEADER, bytes.length - 8))) {
    throw bad(path, `header length ${headerLength} exceeds the file (${bytes.length} bytes)`);
  }
  const dataStart = 8 + Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(bytes.subarray(8, dataStart).toString('utf8'));
  } catch (err) {
    throw bad(path, `header is not JSON (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad(path, 'header is not a JSON object');
  const dataLength = bytes.length - dataStart;
  const tensors = new Map<string, NamedTensor>();
  const spans: Array<[number, number, string]> = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      if (typeof entry !== 'object' || entry === null || Object.values(entry).some((v) => typeof v !== 'string')) {
        throw bad(path, '__metadata__ must map names to strings');
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e.dtype !== 'F32') throw bad(path, `tensor "${name}" has dtype ${JSON.stringify(e.dtype)}; only F32 is supported`);
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw bad(path, `tensor "${name}" has an invalid shape`);
    const offsets = e.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
      throw bad(path, `tensor "${name}" has invalid data_offsets`);
    }
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end < begin || end - begin !== count * 4) {
      throw bad(path, `tensor "${name}" claims ${end - begin} bytes for shape [${shape.join(', ')}] (${count * 4} bytes)`);
    }
    if (end > dataLength) throw bad(path, `tensor "${name}" ends at byte ${end} but the data is ${dataLength} bytes (truncated?)`);
    spans.push([begin, end, name]);
    const data = new Float32Array(count);
    Buffer.from(data.buffer).set(bytes.subarray(dataStart + begin, dataStart + end));
    tensors.set(name, { shape: shape as number[], data });
  }
  spans.sort((a, b) => a[0] - b[0]);
  let covered = 0;
  for (const [begin, end, name] of spans) {
    if (begin !== covered) throw bad(path, `tensor "${name}" starts at byte ${begin}, expected ${covered} (overlap or hole)`);
    covered = end;
  }
  if (covered !== dataLength) throw bad(path, `the data section has ${dataLength - covered} bytes no tensor claims`);
  return { tensors, metadata };
}

export function readSafetensors(path: string): SafetensorsFile {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return decodeSafetensors(bytes, path);
}
