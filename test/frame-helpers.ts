import { decodeFrame, FRAME, type TensorHeader } from '../src/comm/frames.js';

/** A tensor frame's header and payload, as the receiving side decodes them (a control frame is a test failure). */
export function tensorFrame(f: Buffer): [TensorHeader, Buffer] {
  const d = decodeFrame(f);
  if (d.type === FRAME.control) throw new Error('a control frame');
  return [d.header, d.payload];
}
