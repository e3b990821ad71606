// Dataset files for tests and benchmarks.
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';

/** One valid chat example; `i` varies the text so that lines differ. */
export function chatExample(i: number): Record<string, unknown> {
  return {
    messages: [
      { role: 'system', content: 'You are a terse assistant that answers arithmetic questions.' },
      { role: 'user', content: `What is ${i} plus ${i + 1}?` },
      { role: 'assistant', content: `${i} plus ${i + 1} is ${2 * i + 1}.` },
    ],
  };
}

/**
 * Writes a valid chat-format JSONL file of about `bytes` bytes (at least 10 examples), streaming so
 * that any size can be generated. Resolves to the bytes written and the number of examples.
 */
export async function generateChatJsonl(path: string, bytes: number): Promise<{ bytes: number; examples: number }> {
  const out = createWriteStream(path);
  let written = 0;
  let examples = 0;
  const BLOCK_BYTES = 1 << 20;
  while (written < bytes || examples < 10) {
    let block = '';
    while (block.length < BLOCK_BYTES && (written + block.length < bytes || examples < 10)) {
      block += JSON.stringify(chatExample(examples)) + '\n';
      examples++;
    }
    written += Buffer.byteLength(block);
    if (!out.write(block)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return { bytes: written, examples };
}
