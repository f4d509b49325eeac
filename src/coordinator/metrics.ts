import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

export interface StepTiming {
  /** Slowest worker's compute time: the step's critical path. */
  computeSec: number;
  /** Parallel-phase wall time not spent computing on the slowest worker (dispatch, transport). */
  waitSec: number;
  reduceSec: number;
  optimizerSec: number;
  publishSec: number;
  workerComputeSec: number[];
}

export interface StepRecord extends StepTiming {
  type: 'step';
  epoch: number;
  step: number;
  tokensSeen: number;
  loss: number;
  stepSec: number;
  elapsedSec: number;
  workers: number;
  /** Peak wasm heap of the workers (0 on other backends) and their live tensors after the step. */
  heapBytes: number;
  liveTensors: number;
  /** Bytes of weights and gradients copied between buffers this step (see README). */
  bytesMoved: number;
}

export interface EvalRecord {
  type: 'eval';
  epoch: number;
  step: number;
  tokensSeen: number;
  trainLoss: number;
  valLoss: number;
  elapsedSec: number;
  evalSec: number;
}

export interface SampleRecord {
  type: 'sample';
  epoch: number;
  step: number;
  text: string;
}

export type MetricRecord = StepRecord | EvalRecord | SampleRecord;

/** Whether a record describes work done before a run position (steps completed, next epoch). */
function before(r: MetricRecord, at: { step: number; epoch: number }): boolean {
  return r.type === 'sample' ? r.epoch - 1 < at.epoch : r.step < at.step;
}

/** metrics.jsonl: one JSON object a line, appended as it happens so a crash loses nothing. */
export class MetricsLog {
  readonly records: MetricRecord[] = [];

  /**
   * Starts a new log, or, when resuming at `resumeAt`, keeps the records of the work before that
   * position (dropping any a crash left after the checkpoint) and appends from there.
   */
  constructor(readonly path: string, resumeAt: { step: number; epoch: number } | null = null) {
    if (resumeAt && existsSync(path)) {
      const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '');
      this.records.push(...lines.map((l) => JSON.parse(l) as MetricRecord).filter((r) => before(r, resumeAt)));
    }
    writeFileSync(path, this.records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  }

  write(record: MetricRecord): void {
    this.records.push(record);
    appendFileSync(this.path, `${JSON.stringify(record)}\n`);
  }

  of<K extends MetricRecord['type']>(type: K): Array<Extract<MetricRecord, { type: K }>> {
    return this.records.filter((r): r is Extract<MetricRecord, { type: K }> => r.type === type);
  }
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
