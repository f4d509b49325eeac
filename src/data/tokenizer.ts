import { Tiktoken } from 'js-tiktoken/lite';
import gpt2 from 'js-tiktoken/ranks/gpt2';

let encoder: Tiktoken | null = null;

/** GPT-2 BPE; the ranks ship inside js-tiktoken, so no network is needed. */
export function gpt2Tokenizer(): Tiktoken {
  encoder ??= new Tiktoken(gpt2);
  return encoder;
}

export function encode(text: string): number[] {
  return gpt2Tokenizer().encode(text, ['<|endoftext|>']);
}

export function decode(tokens: ArrayLike<number>): string {
  return gpt2Tokenizer().decode(Array.from(tokens));
}
