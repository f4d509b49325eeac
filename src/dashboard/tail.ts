import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';

/**
 * Follows a JSON-lines file that another process (or this one) appends to: each read returns the
 * complete lines added since the last one, parsed. A line still being written waits for its end.
 */
export class JsonlTail {
  private offset = 0;
  private partial = '';

  constructor(readonly path: string) {}

  read(): unknown[] {
    if (!existsSync(this.path)) return [];
    const size = statSync(this.path).size;
    // A file rewritten shorter (a resumed run drops records past its checkpoint) is read again.
    if (size < this.offset) {
      this.offset = 0;
      this.partial = '';
    }
    if (size === this.offset) return [];
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
    return lines.filter((l) => l.trim() !== '').flatMap((l) => {
      try {
        return [JSON.parse(l) as unknown];
      } catch {
        return []; // a damaged line: the dashboard shows the rest
      }
    });
  }
}
