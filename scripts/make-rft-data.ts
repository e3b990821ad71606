// Writes samples/rft-train.jsonl and samples/rft-valid.jsonl: a toy reinforcement task whose
// answer a grader can check and that the random-init tiny model can learn in a couple of minutes.
//
// Every prompt asks Captain Byte to shout a word with the letter in the line's `letter` key ("k"),
// and the grader is string_check `like` (contains) on {{sample.output_text}} against
// {{item.letter}}. The tiny model's random outputs already contain a "k" about a fifth of the time
// (16-token completions), so rewards vary within a group from the first step, and raising that
// rate is what reinforcement learning has to do: there is no supervised target anywhere.
//
// Run: npx tsx scripts/make-rft-data.ts

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QUESTIONS, SYSTEM_PROMPT } from './make-demo-data.ts';

export const RFT_LETTER = 'k';

/** The grader the samples are meant for (also used by the tests). */
export const RFT_GRADER = {
  type: 'string_check',
  name: 'has the letter',
  operation: 'like',
  input: '{{sample.output_text}}',
  reference: '{{item.letter}}',
} as const;

function line(question: string): string {
  return JSON.stringify({
    messages: [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: `Shout a word with the letter ${RFT_LETTER}! ${question}` },
    ],
    letter: RFT_LETTER,
  });
}

const questions = QUESTIONS.map(([q]) => q);
export const RFT_TRAIN = questions.slice(0, 24).map(line);
export const RFT_VALID = questions.slice(24, 32).map(line);

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'samples');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'rft-train.jsonl'), RFT_TRAIN.join('\n') + '\n');
  writeFileSync(join(dir, 'rft-valid.jsonl'), RFT_VALID.join('\n') + '\n');
  console.log(`wrote ${RFT_TRAIN.length} training and ${RFT_VALID.length} validation prompts to ${dir}`);
}
