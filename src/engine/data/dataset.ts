// A training or validation file, tokenized: what the trainer iterates over.

import type { ChatFormatter, TokenizedExample } from './chat-format.ts';
import { readJsonlSync } from './jsonl.ts';

export interface TokenizedDataset {
  examples: TokenizedExample[];
  /** Examples cut to the context length. */
  truncatedCount: number;
  /** Σ min(context, tokens per example): one epoch's billable tokens. */
  tokenCount: number;
  /** Examples with no trainable token left (e.g. every assistant turn weight 0, or cut off). */
  untrainableCount: number;
}

export function tokenizeDataset(path: string, formatter: ChatFormatter, contextLength: number): TokenizedDataset {
  const dataset: TokenizedDataset = { examples: [], truncatedCount: 0, tokenCount: 0, untrainableCount: 0 };
  for (const { line, value } of readJsonlSync(path)) {
    let example: TokenizedExample;
    try {
      example = formatter.tokenizeExample(value, contextLength);
    } catch (error) {
      throw new Error(`${path}: example on line ${line}: ${(error as Error).message}`);
    }
    dataset.examples.push(example);
    dataset.tokenCount += example.ids.length;
    if (example.truncated) dataset.truncatedCount++;
    // weights[0] never counts: the first token is not predicted.
    if (!example.weights.subarray(1).some((w) => w !== 0)) dataset.untrainableCount++;
  }
  return dataset;
}
