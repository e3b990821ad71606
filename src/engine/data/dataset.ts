// A training or validation file, tokenized: what the trainer iterates over.

import type { ChatFormatter, TokenizedExample } from './chat-format.ts';
import { readJsonlSync } from './jsonl.ts';

export interface TokenizedDataset {
  examples: TokenizedExample[];
  /** Examples cut to the context length. */
  truncatedCount: number;
  /** Σ min(context, tokens per example): one epoch's billable tokens. */
  tokenCount: number;
  /** Tokens the loss is computed on (weight ≠ 0), in one epoch. */
  targetTokenCount: number;
  /** Examples with no trainable token left (e.g. every assistant turn weight 0, or cut off). */
  untrainableCount: number;
}

/** `trainOnInputs`: every token is a target (after the first, which nothing predicts), the prompt's too. */
export function tokenizeDataset(path: string, formatter: ChatFormatter, contextLength: number, options: { trainOnInputs?: boolean } = {}): TokenizedDataset {
  const examples: TokenizedExample[] = [];
  for (const { line, value } of readJsonlSync(path)) {
    let example: TokenizedExample;
    try {
      example = formatter.tokenizeExample(value, contextLength);
    } catch (error) {
      throw new Error(`${path}: example on line ${line}: ${(error as Error).message}`);
    }
    if (options.trainOnInputs) example.weights.fill(1);
    examples.push(example);
  }
  return datasetOf(examples);
}

/** The dataset with every example cut to its first `contextLength` tokens, as tokenizing at that context would. */
export function truncateDataset(dataset: TokenizedDataset, contextLength: number): TokenizedDataset {
  return datasetOf(
    dataset.examples.map((e) =>
      e.ids.length <= contextLength ? e : { ...e, ids: e.ids.subarray(0, contextLength), weights: e.weights.subarray(0, contextLength), truncated: true },
    ),
  );
}

function datasetOf(examples: TokenizedExample[]): TokenizedDataset {
  const dataset: TokenizedDataset = { examples, truncatedCount: 0, tokenCount: 0, targetTokenCount: 0, untrainableCount: 0 };
  for (const example of examples) {
    dataset.tokenCount += example.ids.length;
    if (example.truncated) dataset.truncatedCount++;
    // weights[0] never counts: the first token is not predicted.
    const targets = example.weights.subarray(1).reduce((n, w) => n + (w !== 0 ? 1 : 0), 0);
    dataset.targetTokenCount += targets;
    if (targets === 0) dataset.untrainableCount++;
  }
  return dataset;
}
