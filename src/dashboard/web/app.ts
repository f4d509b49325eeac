/**
 * The dashboard in the browser: follows the server's event stream (the runs' metrics records) and
 * draws them with the same Vega-Lite specs as the static report.
 */
import type { EvalRecord, MemberRecord, MetricRecord, SampleRecord, StepRecord } from '../../coordinator/metrics.js';
import { median } from '../../math/stats.js';
import { lossCurvesSpec, PHASES, phaseBarsSpec, type LossPoint } from '../../report/specs.js';
import { escapeHtml } from '../html.js';

interface VegaView {
  runAsync(): Promise<unknown>;
  finalize(): void;
}
/** The UMD builds the page loads from the installed vega and vega-lite packages. */
declare const vega: { parse(spec: unknown): unknown; View: new (runtime: unknown, opts: { renderer: string; container: Element }) => VegaView };
declare const vegaLite: { compile(spec: unknown): { spec: unknown } };

interface RunInfo {
  id: number;
  label: string;
  dir: string;
  totalSteps: number | null;
}

/** A run's records by type, each list appended to as records arrive. */
type Records = { [K in MetricRecord['type']]: Array<Extract<MetricRecord, { type: K }>> };
const noRecords = (): Records => ({ step: [], eval: [], member: [], sample: [] });

function file(into: Records, r: MetricRecord): void {
  switch (r.type) {
    case 'step': into.step.push(r); break;
    case 'eval': into.eval.push(r); break;
    case 'member': into.member.push(r); break;
    case 'sample': into.sample.push(r); break;
  }
}

const runs: RunInfo[] = [];
const records: Records[] = [];
const views = new Map<string, VegaView>();
const el = (id: string) => document.getElementById(id)!;
const axis = el('x') as HTMLSelectElement;

/** Rounded to whole seconds first, so 119.6 s reads 2m00s, not 1m60s. */
const duration = (sec: number) => {
  const s = Math.round(sec);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
};
const megabytes = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

async function draw(id: string, spec: unknown): Promise<void> {
  views.get(id)?.finalize();
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'svg', container: el(id) });
  views.set(id, view);
  await view.runAsync();
}

function runsTable(): string {
  const rows = runs.map((run) => {
    const { step: steps, eval: evals } = records[run.id]!;
    const last = steps.at(-1);
    const recent = steps.slice(-10);
    const rate = recent.length > 1 ? (recent.at(-1)!.tokensSeen - recent[0]!.tokensSeen) / (recent.at(-1)!.elapsedSec - recent[0]!.elapsedSec) : 0;
    const done = last ? last.step + 1 : 0;
    const total = run.totalSteps;
    const eta = total && last ? duration(Math.max(0, total - done) * median(recent.map((s) => s.stepSec))) : '–';
    return `<tr><td>${escapeHtml(run.label)}</td><td>${escapeHtml(run.dir)}</td><td class="num">${done}${total ? ` / ${total} (${((100 * done) / total).toFixed(0)}%)` : ''}</td>` +
      `<td class="num">${rate ? rate.toFixed(0) : '–'}</td><td class="num">${last ? duration(last.elapsedSec) : '–'}</td><td class="num">${eta}</td>` +
      `<td class="num">${evals.at(-1)?.trainLoss.toFixed(3) ?? '–'}</td><td class="num">${evals.at(-1)?.valLoss.toFixed(3) ?? '–'}</td></tr>`;
  });
  return '<tr><th>run</th><th>directory</th><th class="num">steps</th><th class="num">tokens/s</th><th class="num">wall time</th><th class="num">ETA</th>' +
    `<th class="num">train loss</th><th class="num">val loss</th></tr>${rows.join('')}`;
}

function lossPoints(): LossPoint[] {
  const x = axis.value as 'step' | 'tokens' | 'time';
  const at = (e: EvalRecord) => (x === 'step' ? e.step : x === 'tokens' ? e.tokensSeen : e.elapsedSec);
  return runs.flatMap((run) => records[run.id]!.eval.flatMap((e): LossPoint[] => [
    { at: at(e), loss: e.trainLoss, split: 'train', run: run.label },
    { at: at(e), loss: e.valLoss, split: 'val', run: run.label },
  ]));
}

/** Each member's joining record and its state, from the membership records. */
function membership(events: MemberRecord[]): { info: Map<number, MemberRecord>; state: Map<number, string> } {
  const info = new Map<number, MemberRecord>();
  const state = new Map<number, string>();
  for (const e of events) {
    if (e.event === 'start' || e.event === 'join') {
      info.set(e.member, e);
      state.set(e.member, 'working');
    } else if (e.event === 'leave') {
      state.set(e.member, 'left');
    } else if (e.event === 'lost' || e.event === 'diverged') {
      state.set(e.member, 'lost');
    }
  }
  return { info, state };
}

function workersTable(): string {
  const rows = runs.flatMap((run) => {
    const list = records[run.id]!;
    const last = list.step.at(-1);
    const { info, state } = membership(list.member);
    const inLast = new Map((last?.members ?? []).map((m) => [m.member, m]));
    const ids = [...new Set([...info.keys(), ...inLast.keys()])].sort((a, b) => a - b);
    return ids.map((id) => {
      const m = inLast.get(id);
      const i = info.get(id);
      const who = id === 0 ? 'local threads' : `node ${id} (${i?.host ?? '?'})`;
      const now = state.get(id) ?? 'working';
      const shown = now === 'working' && (!m || m.slots.length === 0) ? 'idle' : now;
      const share = m && last && last.stepSec > 0 ? `${((100 * m.computeSec) / last.stepSec).toFixed(0)}%` : '–';
      const heard = m?.lastHeardSec === undefined ? '–' : `${m.lastHeardSec.toFixed(1)} s ago`;
      return `<tr><td>${escapeHtml(run.label)}</td><td>${escapeHtml(who)}</td><td>${i ? `${i.threads} thread(s), ${escapeHtml(i.backend ?? '?')}, ${escapeHtml(i.kernels ?? '?')}` : ''}</td>` +
        `<td>${shown}</td><td>${m?.slots.join(', ') ?? ''}</td><td class="num">${m ? `${m.computeSec.toFixed(2)} s` : '–'}</td><td class="num">${share}</td>` +
        `<td class="num">${m ? megabytes(m.sentBytes) : '–'}</td><td class="num">${m ? megabytes(m.receivedBytes) : '–'}</td><td class="num">${heard}</td></tr>`;
    });
  });
  return '<tr><th>run</th><th>worker</th><th>threads, backend, kernels</th><th>state</th><th>slots</th><th class="num">compute</th>' +
    `<th class="num">share of the step</th><th class="num">sent</th><th class="num">received</th><th class="num">last heard</th></tr>${rows.join('')}`;
}

const memberLine = (run: RunInfo, m: MemberRecord) => `${run.label}, step ${m.step}: ${m.member === 0 ? 'local threads' : `node ${m.member} (${m.host})`} ${m.event}${m.reason ? `: ${m.reason}` : ''}`;
const sampleLine = (run: RunInfo, s: SampleRecord) => `${run.label}, epoch ${s.epoch}: ${s.text}`;

let pending = false;

/** Redraws at most twice a second, however fast records come. */
function schedule(): void {
  if (pending) return;
  pending = true;
  setTimeout(() => {
    pending = false;
    void render();
  }, 500);
}

async function render(): Promise<void> {
  el('runs').innerHTML = runsTable();
  el('workers').innerHTML = workersTable();
  el('events').innerHTML = runs.flatMap((run) => records[run.id]!.member.map((m) => `<div>${escapeHtml(memberLine(run, m))}</div>`)).slice(-30).join('') || '<div>none</div>';
  el('samples').innerHTML = runs.flatMap((run) => records[run.id]!.sample.map((s) => `<div>${escapeHtml(sampleLine(run, s))}</div>`)).join('') || '<div>none yet</div>';
  const points = lossPoints();
  const xTitle = { step: 'Step', tokens: 'Tokens seen (tokens)', time: 'Wall-clock time (s)' }[axis.value] ?? 'Step';
  await draw('loss', lossCurvesSpec(points, xTitle, 'Train and val loss', 'Run'));
  const phases = runs.flatMap((run) => {
    const recent: StepRecord[] = records[run.id]!.step.slice(-20);
    return recent.length === 0 ? [] : PHASES.map(([key, name], order) => ({ run: run.label, phase: name, order, sec: median(recent.map((s) => s[key])) }));
  });
  await draw('phases', phaseBarsSpec(phases, runs.map((r) => r.label), PHASES.map(([, n]) => n), 'Median step by phase'));
  // For tests and scripts: what the page shows, as numbers.
  document.body.dataset.lossPoints = String(points.length);
  document.body.dataset.steps = String(runs.reduce((n, run) => n + records[run.id]!.step.length, 0));
}

const source = new EventSource('/events');
source.addEventListener('runs', (e) => {
  runs.splice(0, runs.length, ...(JSON.parse((e as MessageEvent<string>).data) as RunInfo[]));
  records.splice(0, records.length, ...runs.map(noRecords));
  el('status').textContent = `${runs.length} run${runs.length === 1 ? '' : 's'}, live`;
});
source.addEventListener('records', (e) => {
  const { run, records: fresh } = JSON.parse((e as MessageEvent<string>).data) as { run: number; records: MetricRecord[] };
  const into = records[run];
  if (into) for (const r of fresh) file(into, r);
  schedule();
});
source.onerror = () => {
  el('status').textContent = 'disconnected: retrying';
};
axis.addEventListener('change', () => void render());
