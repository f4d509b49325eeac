/** A one-line progress bar on a terminal (stderr); silent elsewhere, where eval lines suffice. */
export class ProgressBar {
  private shown = false;

  constructor(private readonly total: number, private readonly stream: NodeJS.WriteStream = process.stderr, private readonly enabled = stream.isTTY === true) {}

  update(done: number, fields: Record<string, string>, etaSec: number): void {
    if (!this.enabled) return;
    const width = 24;
    const filled = Math.round((width * done) / Math.max(1, this.total));
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    const info = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join('  ');
    this.stream.write(`\r\x1b[K${bar} step ${done}/${this.total}  ${info}  ETA ${formatDuration(etaSec)}`);
    this.shown = true;
  }

  /** Clears the bar so a log line can be printed; the next update redraws it. */
  clear(): void {
    if (this.shown) this.stream.write('\r\x1b[K');
    this.shown = false;
  }
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const s = Math.max(0, Math.round(sec));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}
