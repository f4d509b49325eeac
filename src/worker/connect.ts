import { X509Certificate } from 'node:crypto';
import { readFlagFile } from '../util/files.js';
import { errorMessage, UsageError } from '../util/errors.js';

const EXPECTED = 'expected ws://HOST:PORT or wss://HOST:PORT';

/**
 * The coordinator's address from --connect. The port is read from the text itself: URL drops a
 * scheme's default port (ws://HOST:80 and ws://HOST look the same), and rejects one out of range
 * without saying so.
 */
export function parseConnect(connect: string): URL {
  const parts = /^([a-z][a-z\d+.-]*):\/\/([^/?#]*)/i.exec(connect);
  if (!parts) throw new UsageError(`--connect ${connect} is not a URL (${EXPECTED})`);
  const scheme = parts[1]!.toLowerCase();
  if (scheme !== 'ws' && scheme !== 'wss') throw new UsageError(`--connect must be a ws:// or wss:// URL, got ${connect}`);
  // Past any user info; an IPv6 host is in brackets, so its colons are not the port's.
  const hostPort = parts[2]!.slice(parts[2]!.lastIndexOf('@') + 1);
  const port = /^(?:\[[^\]]*\]|[^:[]*):(.*)$/.exec(hostPort)?.[1];
  if (!port) throw new UsageError(`--connect needs a port: ${scheme}://HOST:PORT, got ${connect}`);
  const digits = /^\d+$/.test(port);
  if (!digits || Number(port) < 1 || Number(port) > 65535) {
    throw new UsageError(`--connect ${connect}: port ${port} is ${digits ? 'out of range' : 'not a number'} (1-65535)`);
  }
  try {
    return new URL(connect);
  } catch {
    throw new UsageError(`--connect ${connect} is not a URL (${EXPECTED})`);
  }
}

/** The certificate(s) of --ca, checked now: a wrong file would otherwise surface as a TLS error at connect time. */
export function readCa(path: string | undefined, url: URL): Buffer | undefined {
  if (path === undefined) return undefined;
  if (url.protocol !== 'wss:') throw new UsageError('--ca is for wss:// URLs (--connect is ws://, which does not use TLS)');
  const pem = readFlagFile('ca', path);
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`--ca ${path} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)`);
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new UsageError(`--ca ${path} holds a certificate that does not parse: ${errorMessage(err)}`);
  }
  return pem;
}

/** What a server that answered with HTTP instead of upgrading to WebSocket is. */
export function notCoordinator(connect: string, status: number | undefined): string {
  return `the server at ${connect} answered, but not as a gpt-ddp coordinator (HTTP ${status ?? '?'}): check the address and port`;
}

/** One line for a connection that failed before it opened, saying what the error shows and no more. */
export function connectFailure(err: NodeJS.ErrnoException, url: URL, connect: string): string {
  // OpenSSL's words when the first bytes back are not a TLS record: the server speaks something else (plain HTTP).
  if (url.protocol === 'wss:' && /wrong version number/.test(err.message)) return `the server at ${connect} does not speak TLS: use ws:// (or check the port)`;
  // Node's words for a connection closed before any HTTP response, e.g. a TLS server dropping a plain-text request.
  if (err.message === 'socket hang up') {
    const hint = url.protocol === 'ws:' ? ' (a wss:// coordinator? use wss://, with --ca for a self-signed certificate)' : '';
    return `the server at ${connect} closed the connection during the handshake${hint}`;
  }
  return `cannot reach the coordinator at ${connect}: ${err.message.trim()}`;
}
