import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { MemberEvent, StepTiming } from '../comm/group.js';

export interface StepRecord extends StepTiming {
  type: 'step';
  epoch: number;
  step: number;
  tokensSeen: number;
  loss: number;
  elapsedSec: number;
  /** Slots the global batch was split into. */
  workers: number;
}

export interface MemberRecord extends MemberEvent {
  type: 'member';
  elapsedSec: number;
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

export type MetricRecord = StepRecord | EvalRecord | SampleRecord | MemberRecord;

/** Whether a record describes work done before a run position (steps completed, next epoch). */
function before(r: MetricRecord, at: { step: number; epoch: number }): boolean {
  return r.type === 'sample' ? r.epoch - 1 < at.epoch : r.step < at.step;
}

const sampleLine = (r: SampleRecord) => `Epoch ${r.epoch} (step ${r.step}): ${r.text}\n`;

/**
 * metrics.jsonl: one JSON object a line, appended as it happens so a crash loses nothing; the
 * samples also go to samples.txt.
 */
export class MetricsLog {
  readonly records: MetricRecord[] = [];

  /**
   * Starts a new log, or, when resuming at `resumeAt`, keeps the records of the work before that
   * position (dropping any a crash left after the checkpoint) and appends from there.
   */
  constructor(readonly path: string, private readonly samplesPath: string, resumeAt: { step: number; epoch: number } | null = null) {
    if (resumeAt && existsSync(path)) {
      const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '');
      this.records.push(...lines.map((l) => JSON.parse(l) as MetricRecord).filter((r) => before(r, resumeAt)));
    }
    writeFileSync(path, this.records.map((r) => `${JSON.stringify(r)}\n`).join(''));
    writeFileSync(samplesPath, this.of('sample').map(sampleLine).join(''));
  }

  write(record: MetricRecord): void {
    this.records.push(record);
    appendFileSync(this.path, `${JSON.stringify(record)}\n`);
    if (record.type === 'sample') appendFileSync(this.samplesPath, sampleLine(record));
  }

  of<K extends MetricRecord['type']>(type: K): Array<Extract<MetricRecord, { type: K }>> {
    return this.records.filter((r): r is Extract<MetricRecord, { type: K }> => r.type === type);
  }
}
