import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { parseRecord, type MetricRecord } from '../coordinator/metrics.js';

/** What a read found: the complete lines added since the last read, or the whole file when it was replaced. */
export interface TailRead {
  records: MetricRecord[];
  /** The file was replaced or rewritten shorter since the last read: `records` start from its beginning. */
  restarted: boolean;
}

/**
 * Follows a JSON-lines file that another process (or this one) appends to: each read returns the
 * complete lines added since the last one, parsed. A line still being written waits for its end.
 * A file replaced (a new inode: a resumed run rewrites its log without the records past its
 * checkpoint) or rewritten shorter is read again from the start.
 */
export class JsonlTail {
  private offset = 0;
  private partial = '';
  private inode: number | null = null;

  constructor(readonly path: string) {}

  read(): TailRead {
    const stat = statSync(this.path, { throwIfNoEntry: false });
    if (!stat) return { records: [], restarted: false };
    const { size, ino } = stat;
    const restarted = this.inode !== null && (ino !== this.inode || size < this.offset);
    this.inode = ino;
    if (restarted) {
      this.offset = 0;
      this.partial = '';
    }
    if (size === this.offset) return { records: [], restarted };
    const bytes = Buffer.alloc(size - this.offset);
    const fd = openSync(this.path, 'r');
    try {
      readSync(fd, bytes, 0, bytes.length, this.offset);
    } finally {
      closeSync(fd);
    }
    this.offset = size;
    const lines = (this.partial + bytes.toString('utf8')).split('\n');
    this.partial = lines.pop() ?? '';
    // A damaged line is skipped: the dashboard shows the rest.
    const records = lines.flatMap((l) => parseRecord(l) ?? []);
    return { records, restarted };
  }
}
