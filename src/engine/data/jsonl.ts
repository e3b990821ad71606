// JSON Lines training files: one JSON value per line, blank lines skipped, errors name the line.

import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface JsonlRecord {
  /** 1-based line number in the file. */
  line: number;
  value: unknown;
}

function parseLine(text: string, line: number, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: line ${line} is not valid JSON (${(error as Error).message})`);
  }
}

/** Stream a JSONL file record by record (for files too large to hold as text). */
export async function* readJsonl(path: string): AsyncGenerator<JsonlRecord> {
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let line = 0;
  for await (const text of lines) {
    line++;
    if (text.trim() === '') continue;
    yield { line, value: parseLine(text, line, path) };
  }
}

/** Read a whole JSONL file. */
export function readJsonlSync(path: string): JsonlRecord[] {
  const records: JsonlRecord[] = [];
  readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .forEach((text, i) => {
      if (text.trim() !== '') records.push({ line: i + 1, value: parseLine(text, i + 1, path) });
    });
  return records;
}
