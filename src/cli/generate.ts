import { decode, encode } from '../data/tokenizer.js';
import { initBackend, type BackendChoice } from '../model/backend.js';
import type { KernelChoice } from '../model/provider.js';
import { generate } from '../model/generate.js';
import { disposeWeights, uploadWeights } from '../model/gpt.js';
import { pickToken } from '../model/sampling.js';
import { UsageError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { loadModelArg } from './checkpoint-args.js';

export interface GenerateArgs {
  checkpoint: string;
  config?: string;
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  seed: number;
  backend: BackendChoice;
  /** Matmul provider (default auto). */
  kernels?: KernelChoice;
}

/** Prompt plus continuation: greedy at temperature 0, else temperature and top-k sampling. */
export async function generateText(args: GenerateArgs): Promise<string> {
  if (args.prompt.length === 0) throw new UsageError('--prompt must not be empty');
  const model = loadModelArg(args.checkpoint, args.config);
  await initBackend(args.backend, args.kernels ?? 'auto');
  const m = uploadWeights(model.layout, model.weights);
  try {
    const rng = new Rng(args.seed);
    const tokens = generate(model.layout, m, model.weights, encode(args.prompt), args.maxNewTokens,
      (logits) => pickToken(logits, { temperature: args.temperature, topK: args.topK }, rng));
    return decode(tokens);
  } finally {
    disposeWeights(m);
  }
}
