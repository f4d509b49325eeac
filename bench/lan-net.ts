/**
 * The emulated LAN of bench:lan: three hosts as network namespaces (gdb-coord, gdb-n1, gdb-n2),
 * each with its own veth link to a bridge in a fourth namespace (gdb-sw), so the coordinator's link
 * carries both nodes' traffic. Every veth end is shaped with tbf to 1 Gbit/s, so both directions of
 * every link are. Addresses come from the RFC 2544 benchmarking range 198.18.0.0/15. Nothing
 * outside these namespaces is touched.
 */
import { execFileSync } from 'node:child_process';

/** A run or a command failed: the message says which and shows its output. */
export class BenchError extends Error {}

export function commandExists(cmd: string): boolean {
  try {
    execFileSync(cmd, ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface Host {
  ns: string;
  addr: string;
}

const SWITCH = 'gdb-sw';
const BRIDGE = 'gdb-br';
export const COORD: Host = { ns: 'gdb-coord', addr: '198.18.0.1' };
export const NODES: Host[] = [{ ns: 'gdb-n1', addr: '198.18.0.2' }, { ns: 'gdb-n2', addr: '198.18.0.3' }];
const HOSTS = [COORD, ...NODES];
/** Every namespace this benchmark makes, and the only ones it ever deletes. */
export const NAMESPACES = [SWITCH, ...HOSTS.map((h) => h.ns)];
export const SHAPING = ['root', 'tbf', 'rate', '1gbit', 'burst', '1mb', 'latency', '10ms'];
/** 1 Gbit/s in bytes per second. */
export const LINK_BYTES_PER_SEC = 125e6;

/** Runs a command to completion; on failure, throws with the command line and its stderr. */
function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new BenchError(`${cmd} ${args.join(' ')} failed${stderr ? `: ${stderr}` : ''}`);
  }
}

function ourNamespaces(): string[] {
  const listed = run('ip', ['netns', 'list']).split('\n').map((line) => line.split(' ')[0]!);
  return NAMESPACES.filter((ns) => listed.includes(ns));
}

/** Deletes our namespaces (their veths and bridge go with them); never throws. */
export function removeNamespaces(): void {
  for (const ns of ourNamespaces()) {
    try {
      run('ip', ['netns', 'delete', ns]);
    } catch (err) {
      process.stderr.write(`bench:lan: could not delete namespace ${ns}: ${(err as Error).message}\n`);
    }
  }
}

function shape(ns: string, dev: string): void {
  run('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, ...SHAPING]);
}

/** One host's link: a veth pair created inside the namespaces, the switch end on the bridge. */
function connect(host: Host): void {
  const hostEnd = `${host.ns}-h`;
  const switchEnd = `${host.ns}-s`;
  run('ip', ['-n', SWITCH, 'link', 'add', switchEnd, 'type', 'veth', 'peer', 'name', hostEnd, 'netns', host.ns]);
  run('ip', ['-n', SWITCH, 'link', 'set', switchEnd, 'master', BRIDGE, 'up']);
  run('ip', ['-n', host.ns, 'addr', 'add', `${host.addr}/24`, 'dev', hostEnd]);
  run('ip', ['-n', host.ns, 'link', 'set', hostEnd, 'up']);
  shape(SWITCH, switchEnd);
  shape(host.ns, hostEnd);
}

export function buildLan(): void {
  for (const ns of NAMESPACES) {
    run('ip', ['netns', 'add', ns]);
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  run('ip', ['-n', SWITCH, 'link', 'add', BRIDGE, 'type', 'bridge']);
  run('ip', ['-n', SWITCH, 'link', 'set', BRIDGE, 'up']);
  for (const host of HOSTS) connect(host);
}


/** Bytes tbf has sent on a link's end (its qdisc's counter). */
function sentBytes(ns: string, dev: string): number {
  const m = /Sent (\d+) bytes/.exec(run('tc', ['-s', '-n', ns, 'qdisc', 'show', 'dev', dev]));
  if (!m) throw new BenchError(`no byte counter in tc -s qdisc show dev ${dev} (namespace ${ns})`);
  return Number(m[1]);
}

/** What the coordinator's link has carried so far: towards the coordinator, and from it. */
export interface LinkCounters {
  toCoordinator: number;
  fromCoordinator: number;
}

export function coordinatorLinkCounters(): LinkCounters {
  return { toCoordinator: sentBytes(SWITCH, `${COORD.ns}-s`), fromCoordinator: sentBytes(COORD.ns, `${COORD.ns}-h`) };
}
