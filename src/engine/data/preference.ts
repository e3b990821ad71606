// Preference (DPO) examples → a chosen and a rejected token sequence that share the prompt.
// Each is rendered through the model's chat template like a supervised example whose only trained
// turn is the answer: loss weights (here: which tokens' log-probs make the sequence log-prob) cover
// the final assistant turn, from the first token after the generation prompt through the
// end-of-turn markup. Assistant turns inside `input.messages` are context (weight 0).

import type { ChatExample, ChatFormatter, ChatMessage, TokenizedExample } from './chat-format.ts';
import { readJsonlSync } from './jsonl.ts';

export interface PreferenceExample {
  input: Pick<ChatExample, 'messages' | 'tools' | 'parallel_tool_calls'>;
  preferred_output: ChatMessage[];
  non_preferred_output: ChatMessage[];
}

export interface TokenizedPair {
  chosen: TokenizedExample;
  rejected: TokenizedExample;
}

export interface PreferenceDataset {
  pairs: TokenizedPair[];
  /** Pairs with a sequence cut to the context length. */
  truncatedCount: number;
  /** Σ min(context, tokens) over both sequences of every pair: one epoch's billable tokens. */
  tokenCount: number;
  /** Pairs where a response has no token left (cut off entirely). */
  untrainableCount: number;
}

function sequence(formatter: ChatFormatter, example: PreferenceExample, output: ChatMessage[], maxLength: number): TokenizedExample {
  if (!Array.isArray(output) || output.length !== 1 || output[0]?.role !== 'assistant') {
    throw new Error('preferred_output and non_preferred_output must each be one assistant message');
  }
  const context = example.input.messages.map((m) => (m.role === 'assistant' ? { ...m, weight: 0 } : m));
  return formatter.tokenizeChat({ ...example.input, messages: [...context, { ...output[0], weight: 1 }] }, maxLength);
}

export function tokenizePreference(formatter: ChatFormatter, example: unknown, maxLength: number): TokenizedPair {
  const e = example as PreferenceExample;
  if (!e || typeof e !== 'object' || !e.input || !Array.isArray(e.input.messages)) {
    throw new Error('preference example needs {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}');
  }
  return { chosen: sequence(formatter, e, e.preferred_output, maxLength), rejected: sequence(formatter, e, e.non_preferred_output, maxLength) };
}

const trainable = (s: TokenizedExample) => s.weights.subarray(1).some((w) => w !== 0);

export function tokenizePreferenceDataset(path: string, formatter: ChatFormatter, contextLength: number): PreferenceDataset {
  const dataset: PreferenceDataset = { pairs: [], truncatedCount: 0, tokenCount: 0, untrainableCount: 0 };
  for (const { line, value } of readJsonlSync(path)) {
    let pair: TokenizedPair;
    try {
      pair = tokenizePreference(formatter, value, contextLength);
    } catch (error) {
      throw new Error(`${path}: example on line ${line}: ${(error as Error).message}`);
    }
    dataset.pairs.push(pair);
    dataset.tokenCount += pair.chosen.ids.length + pair.rejected.ids.length;
    if (pair.chosen.truncated || pair.rejected.truncated) dataset.truncatedCount++;
    if (!trainable(pair.chosen) || !trainable(pair.rejected)) dataset.untrainableCount++;
  }
  return dataset;
}
