import { encode } from '../data/tokenizer.js';
import { loadVerdict } from '../data/verdict.js';
import { buildLayout } from '../model/layout.js';
import { DEFAULT_CONFIG, loadConfig, prepareData } from './common.js';

export interface InspectArgs {
  config?: string;
  data?: string;
}

/** Sizes of the model and the data, as one JSON object. */
export async function inspect(args: InspectArgs): Promise<Record<string, number>> {
  const config = loadConfig(args.config ?? DEFAULT_CONFIG);
  const { text } = await loadVerdict(args.data);
  const data = prepareData(text, config);
  const B = config.training.batchSize;
  return {
    parameters: buildLayout(config.model).totalSize,
    characters: data.characters,
    tokens: encode(text).length,
    trainTokens: data.trainTokens.length,
    valTokens: data.valTokens.length,
    trainBatchesPerEpoch: Math.floor(data.train.size / B),
    valBatches: Math.ceil(data.val.size / B),
  };
}
