import type { Partial } from '../comm/protocol.js';

/**
 * Test hook for the fault tests: `--fault MODE@STEP` makes a node misbehave on the train task of
 * STEP. kill-compute: SIGKILL itself once its backward has produced the first partial sum, before
 * sending anything; kill-upload: SIGKILL itself after sending two frames; hang: compute but never
 * send a result (it still answers heartbeats); nan: send a NaN in its first partial sum.
 */
export class NodeFaults {
  private readonly mode: string | null;
  private readonly step: number;

  constructor(spec: string | undefined) {
    const [mode, step] = (spec ?? '').split('@');
    this.mode = mode || null;
    this.step = Number(step);
  }

  forStep(step: number): { allow: (p: Partial) => boolean; silent: boolean } {
    if (this.mode === null || step !== this.step) return { allow: () => true, silent: false };
    let sent = 0;
    return {
      silent: this.mode === 'hang',
      allow: (p) => {
        if (this.mode === 'kill-compute' || (this.mode === 'kill-upload' && sent === 2)) process.kill(process.pid, 'SIGKILL');
        if (this.mode === 'nan' && sent === 0 && p.kind === 'dense') p.data[0] = Number.NaN;
        sent += 1;
        return this.mode !== 'hang';
      },
    };
  }
}
