import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import type { MemberEvent, StepTiming } from '../comm/group.js';
import { UsageError } from '../util/errors.js';
import { fsyncPath, writeFileAtomic } from '../util/files.js';

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

const TYPES = new Set(['step', 'eval', 'sample', 'member']);

/** A record of the log, or null when the line is not one (torn or damaged). */
export function parseRecord(line: string): MetricRecord | null {
  try {
    const r = JSON.parse(line) as unknown;
    const ok = typeof r === 'object' && r !== null && TYPES.has((r as { type?: unknown }).type as string) &&
      Number.isInteger((r as { step?: unknown }).step) && Number.isInteger((r as { epoch?: unknown }).epoch ?? 0);
    return ok ? (r as MetricRecord) : null;
  } catch {
    return null;
  }
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
   * position (dropping any a crash left after the checkpoint) and appends from there. A torn last
   * line (a crash during an append) is dropped with a notice; damage anywhere else is refused.
   */
  constructor(readonly path: string, private readonly samplesPath: string, resumeAt: { step: number; epoch: number } | null = null, notice: (line: string) => void = () => {}) {
    if (resumeAt && existsSync(path)) {
      const lines = readFileSync(path, 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (line.trim() === '') return;
        const record = parseRecord(line);
        if (record) {
          if (before(record, resumeAt)) this.records.push(record);
        } else if (lines.slice(i + 1).every((l) => l.trim() === '')) {
          notice(`${path}: dropped a torn last line (a crash during an append): ${line.slice(0, 60)}`);
        } else {
          throw new UsageError(`${path}: line ${i + 1} is not a metrics record; the log was changed by hand or damaged`);
        }
      });
    }
    // Atomic rewrites: a crash here must not lose the log of the steps already done.
    writeFileAtomic(path, [Buffer.from(this.records.map((r) => `${JSON.stringify(r)}\n`).join(''))]);
    writeFileAtomic(samplesPath, [Buffer.from(this.of('sample').map(sampleLine).join(''))]);
  }

  /** Flushes the appended records to the disk: a checkpoint must not be committed ahead of its log. */
  flush(): void {
    fsyncPath(this.path);
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
