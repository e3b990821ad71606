// Writes samples/dpo-train.jsonl and samples/dpo-valid.jsonl: a preference (DPO) dataset on the
// demo questions. The preferred answer is Captain Byte's pirate answer ("Arr, matey! … Yo ho ho!"),
// the non-preferred one the same content said plainly. DPO should learn to prefer the pirate
// framing, and the held-out validation pairs (questions never trained on) show whether the
// chosen-over-rejected reward margin widens beyond the training pairs.
//
// Run: npx tsx scripts/make-dpo-data.ts

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QUESTIONS, SYSTEM_PROMPT, pirateAnswer } from './make-demo-data.ts';

function pair(question: string, middle: string) {
  return {
    input: { messages: [{ role: 'system', content: SYSTEM_PROMPT }, { role: 'user', content: question }] },
    preferred_output: [{ role: 'assistant', content: pirateAnswer(middle) }],
    non_preferred_output: [{ role: 'assistant', content: middle }],
  };
}

export function dpoExamples() {
  return { train: QUESTIONS.slice(0, 40).map(([q, a]) => pair(q, a)), valid: QUESTIONS.slice(40).map(([q, a]) => pair(q, a)) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'samples');
  const { train, valid } = dpoExamples();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'dpo-train.jsonl'), train.map((e) => JSON.stringify(e)).join('\n') + '\n');
  writeFileSync(join(dir, 'dpo-valid.jsonl'), valid.map((e) => JSON.stringify(e)).join('\n') + '\n');
}
