import { rmSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { readTokenFile, runToken } from '../comm/auth.js';
import { CONTROL_BYTES, PIECE_FLOATS, sampleBytes } from '../comm/frames.js';
import type { WireFormat } from '../comm/protocol.js';
import { nodesToAwait } from '../comm/cluster.js';
import { NodeServer } from '../comm/server.js';
import type { RunConfig } from '../model/config.js';
import type { ParamLayout } from '../model/layout.js';
import { errorMessage, UsageError } from '../util/errors.js';
import { readFlagFile } from '../util/files.js';

/** Flags of a coordinator that remote nodes join. */
export interface ListenArgs {
  /** HOST:PORT to listen on. */
  listen?: string;
  /** Nodes to wait for before the first step. */
  nodes?: number;
  tokenFile?: string;
  waitTimeout?: number;
  heartbeatTimeout?: number;
  tlsCert?: string;
  tlsKey?: string;
  wire?: WireFormat;
  /** Floats per gradient frame (tests use small pieces to exercise streaming). */
  pieceFloats?: number;
  /** Compare the nodes' weights with the coordinator's every N steps (default CHECKSUM_EVERY). */
  checksumEvery?: number;
}

export const CHECKSUM_EVERY = 10;

export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new UsageError(`--listen must be HOST:PORT (e.g. 0.0.0.0:29500), got "${value}"`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** With nodes, a whole batch's tokens must fit in one task message. */
export function checkBatchFitsTask(config: RunConfig): void {
  const taskBytes = config.training.batchSize * sampleBytes(config.model.contextLength);
  if (taskBytes > CONTROL_BYTES) {
    throw new UsageError(`a batch of ${config.training.batchSize} x ${config.model.contextLength} tokens does not fit in one task message to a node (${taskBytes} bytes, at most ${CONTROL_BYTES}); use a smaller --batch-size`);
  }
}

/** Checks the remote-node flags before anything is created. */
export function checkListenArgs(args: ListenArgs): void {
  if (args.listen) parseListen(args.listen);
  else {
    const stray = (['nodes', 'tokenFile', 'tlsCert', 'tlsKey', 'wire', 'waitTimeout', 'heartbeatTimeout', 'checksumEvery'] as const).find((k) => args[k] !== undefined);
    if (stray) throw new UsageError(`--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --listen HOST:PORT`);
  }
  if ((args.tlsCert === undefined) !== (args.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  if (args.tlsCert !== undefined && args.tlsKey !== undefined) readTls(args.tlsCert, args.tlsKey);
  if (args.tokenFile) readTokenFile(args.tokenFile);
  if (args.pieceFloats !== undefined && args.pieceFloats > PIECE_FLOATS) throw new UsageError(`--piece-floats must be at most ${PIECE_FLOATS}`);
}

/** The certificate and key of --tls-cert and --tls-key, checked to make a TLS context together. */
function readTls(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const pem = { cert: readFlagFile('tls-cert', certFile), key: readFlagFile('tls-key', keyFile) };
  try {
    createSecureContext(pem);
  } catch (err) {
    throw new UsageError(`--tls-cert ${certFile} and --tls-key ${keyFile} are not a PEM certificate and its private key (${errorMessage(err)})`);
  }
  return pem;
}

/** One line for a port that cannot be opened, naming the likely cause. */
function listenFailure(listen: string, host: string, port: number, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const why: Record<string, string> = {
    EADDRINUSE: `port ${port} is in use (another run or program listens there): choose another port`,
    EADDRNOTAVAIL: `${host} is not an address of this machine (0.0.0.0 listens on every interface)`,
    ENOTFOUND: `cannot resolve the host name ${host}`,
    EAI_AGAIN: `cannot resolve the host name ${host} (no answer from DNS)`,
    EACCES: `no permission to listen on port ${port} (ports below 1024 need root): choose a port above 1023`,
  };
  return `--listen ${listen}: ${(code && why[code]) ?? errorMessage(err)}`;
}

/** Addresses other machines can reach when listening on every interface. */
function lanAddresses(): string[] {
  return Object.values(networkInterfaces()).flat().filter((a) => a && a.family === 'IPv4' && !a.internal).map((a) => a!.address);
}

/**
 * Opens the port nodes join through, with the run's token (from --token-file, or generated into
 * the run directory), and prints what to run on every other machine.
 */
export async function startListening(args: ListenArgs, layout: ParamLayout, outDir: string, localWorkers: number, log: (line: string) => void): Promise<NodeServer> {
  const { host, port } = parseListen(args.listen!);
  const { token, path: tokenPath, created } = runToken(args.tokenFile, outDir);
  const pieceFloats = args.pieceFloats ?? PIECE_FLOATS;
  let server: NodeServer;
  try {
    server = await NodeServer.listen({
      host, port, token, layout, pieceFloats, wire: args.wire ?? 'fp32',
      heartbeatTimeoutSec: args.heartbeatTimeout ?? 20, log,
      tls: args.tlsCert ? readTls(args.tlsCert, args.tlsKey!) : undefined,
    });
  } catch (err) {
    // The run never started: a token generated for it would make its directory look used.
    if (created) rmSync(tokenPath, { force: true });
    throw new UsageError(listenFailure(args.listen!, host, port, err));
  }
  const scheme = args.tlsCert ? 'wss' : 'ws';
  const wildcard = host === '0.0.0.0' || host === '::';
  const hosts = wildcard ? lanAddresses() : [server.url.replace(/^wss?:\/\/|:\d+$/g, '')];
  const nodes = nodesToAwait(args.nodes, localWorkers);
  log(`listening on ${server.url}${nodes > 0 ? `; waiting for ${nodes} node${nodes === 1 ? '' : 's'}` : ''}. On each node machine, with ${tokenPath} copied there (chmod 600), run:`);
  for (const h of hosts.length ? hosts : ['THIS-HOST']) {
    log(`  npx gpt-ddp worker --connect ${scheme}://${h}:${server.port} --token-file ${tokenPath}${args.tlsCert ? ` --ca ${resolve(args.tlsCert)}` : ''}`);
  }
  return server;
}
