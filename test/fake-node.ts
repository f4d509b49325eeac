import { WebSocket } from 'ws';
import { newNonce, proof } from '../src/comm/auth.js';
import { controlFrame, decodeFrame, FRAME } from '../src/comm/frames.js';
import { parseCoordinatorMessage } from '../src/comm/messages.js';
import { PROTOCOL_VERSION, type CoordinatorMessage, type NodeMessage, type TrainMessage } from '../src/comm/protocol.js';

/**
 * A scriptable node for the protocol tests: it does the handshake with whatever it is given
 * (token, protocol version, a recorded hello) and then does what the test says.
 */
export interface FakeOptions {
  url: string;
  token: string;
  protocol?: number;
  threads?: number;
  /** Send these bytes as the hello instead of answering the challenge (a replay). */
  helloBytes?: Buffer;
  /** After the welcome: load the state and say ready, so that it is given slots. */
  join?: boolean;
  /** After the welcome (instead of joining): do this, then wait for the coordinator to close. */
  afterWelcome?: (ws: WebSocket) => void;
  /** What to do with a train task (the node then stays silent unless this sends something). */
  onTrain?: (ws: WebSocket, task: TrainMessage) => void;
}

export interface FakeResult {
  /** What the coordinator said: 'welcome', 'refused: ...', or how the connection ended. */
  outcome: string;
  /** The hello this node sent (to replay it). */
  hello: Buffer | null;
  closeCode: number | null;
}

export function fakeNode(opts: FakeOptions): Promise<FakeResult> {
  return new Promise((resolve) => {
    const ws = new WebSocket(opts.url, { perMessageDeflate: false });
    const nonce = newNonce();
    const result: FakeResult = { outcome: 'closed', hello: null, closeCode: null };
    const send = (m: NodeMessage) => ws.send(controlFrame(m));
    ws.on('error', () => {});
    ws.on('close', (code) => {
      result.closeCode = code;
      resolve(result);
    });
    ws.on('message', (data: Buffer) => {
      const frame = decodeFrame(data);
      if (frame.type !== FRAME.control) return;
      const m: CoordinatorMessage = parseCoordinatorMessage(frame.message);
      if (m.kind === 'challenge') {
        const hello = opts.helloBytes ?? controlFrame({
          kind: 'hello', protocol: opts.protocol ?? PROTOCOL_VERSION, nonce, proof: proof(opts.token, 'node', m.nonce, nonce),
          host: 'fake', threads: opts.threads ?? 1, backend: 'wasm',
        });
        result.hello = hello;
        ws.send(hello);
      } else if (m.kind === 'refused') {
        result.outcome = `refused: ${m.reason}`;
      } else if (m.kind === 'welcome') {
        result.outcome = 'welcome';
        if (opts.afterWelcome) opts.afterWelcome(ws);
        else if (!opts.join) ws.close();
      } else if (m.kind === 'state-end') {
        send({ kind: 'ready', version: m.version, backend: 'wasm', kernels: 'fake' });
      } else if (m.kind === 'train') {
        opts.onTrain?.(ws, m);
      } else if (m.kind === 'shutdown') {
        ws.close();
      }
    });
  });
}
