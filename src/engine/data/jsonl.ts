// JSON Lines, the one reader for training and for the control plane's dataset validation: lines are
// cut out of byte chunks, a UTF-8 byte-order mark at the start and CRLF line ends are dropped, blank
// lines are skipped (but counted, so line numbers match an editor's). The splitting and parsing here
// do no I/O of their own (the caller hands over the bytes), which is what lets `src/domain` use them
// through `src/engine/index.ts`; the file readers at the end are the engine's own convenience.

import { isUtf8 } from 'node:buffer';
import { createReadStream, readFileSync } from 'node:fs';

/** One non-blank line: its 1-based number and its bytes (without BOM, CR or LF). */
export interface JsonlLine {
  line: number;
  bytes: Buffer;
}

export interface JsonlRecord {
  /** 1-based line number in the file. */
  line: number;
  value: unknown;
}

/** A line longer than the reader's `maxLineBytes`. */
export class JsonlLineTooLongError extends Error {
  constructor(
    readonly line: number,
    readonly maxLineBytes: number,
  ) {
    super(`line ${line} is longer than the limit of ${maxLineBytes} bytes per line`);
  }
}

/** A line that is not UTF-8 or not JSON; `message` says which, with the line number. */
export class JsonlSyntaxError extends Error {
  constructor(
    readonly line: number,
    readonly problem: 'utf8' | 'json',
    readonly detail: string,
  ) {
    super(problem === 'utf8' ? `line ${line} is not valid UTF-8` : `line ${line} is not valid JSON (${detail})`);
  }
}

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

function isBlank(line: Buffer): boolean {
  for (const byte of line) if (byte !== 0x20 && byte !== 0x09 && byte !== CARRIAGE_RETURN) return false;
  return true;
}

/**
 * Cuts lines out of chunks pushed in order. A line spanning chunks is held as a list of slices and
 * joined once, so memory is bounded by `maxLineBytes` plus one chunk whatever the file's size.
 */
export class JsonlSplitter {
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private lineNumber = 0;

  constructor(private readonly maxLineBytes = Infinity) {}

  /** The lines `chunk` completes. Throws JsonlLineTooLongError as soon as a line passes the limit. */
  *push(chunk: Buffer): Generator<JsonlLine> {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, start);
      const end = newline === -1 ? chunk.length : newline;
      if (this.pendingBytes + (end - start) > this.maxLineBytes) throw new JsonlLineTooLongError(this.lineNumber + 1, this.maxLineBytes);
      if (newline === -1) {
        if (end > start) {
          this.pending.push(chunk.subarray(start));
          this.pendingBytes += end - start;
        }
        return;
      }
      const piece = chunk.subarray(start, newline);
      const bytes = this.pending.length === 0 ? piece : Buffer.concat([...this.pending, piece], this.pendingBytes + piece.length);
      this.pending.length = 0;
      this.pendingBytes = 0;
      const line = this.cleanLine(bytes);
      if (line) yield line;
      start = newline + 1;
    }
  }

  /** The last line, when the input does not end with a newline. */
  *end(): Generator<JsonlLine> {
    if (this.pendingBytes === 0) return;
    const line = this.cleanLine(Buffer.concat(this.pending, this.pendingBytes));
    this.pending.length = 0;
    this.pendingBytes = 0;
    if (line) yield line;
  }

  private cleanLine(raw: Buffer): JsonlLine | null {
    this.lineNumber++;
    let bytes = raw;
    if (this.lineNumber === 1 && bytes.subarray(0, 3).equals(UTF8_BOM)) bytes = bytes.subarray(3);
    if (bytes.length > 0 && bytes[bytes.length - 1] === CARRIAGE_RETURN) bytes = bytes.subarray(0, bytes.length - 1);
    return isBlank(bytes) ? null : { line: this.lineNumber, bytes };
  }
}

/**
 * The non-blank lines of a byte stream (e.g. a file's read stream), as one array per chunk: an
 * await per line instead of per chunk made dataset validation 2–3× slower.
 */
export async function* jsonlLineBatches(chunks: AsyncIterable<Buffer>, maxLineBytes = Infinity): AsyncGenerator<JsonlLine[]> {
  const splitter = new JsonlSplitter(maxLineBytes);
  for await (const chunk of chunks) yield [...splitter.push(chunk)];
  yield [...splitter.end()];
}

/** The line's text, or JsonlSyntaxError when its bytes are not UTF-8. */
export function jsonlText({ line, bytes }: JsonlLine): string {
  if (!isUtf8(bytes)) throw new JsonlSyntaxError(line, 'utf8', '');
  return bytes.toString('utf8');
}

/** The line's JSON value, or JsonlSyntaxError. */
export function parseJsonl(line: number, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new JsonlSyntaxError(line, 'json', (error as Error).message);
  }
}

const parseRecord = (path: string, line: JsonlLine): JsonlRecord => {
  try {
    return { line: line.line, value: parseJsonl(line.line, jsonlText(line)) };
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`);
  }
};

/** Stream a JSONL file record by record (for files too large to hold as text). */
export async function* readJsonl(path: string): AsyncGenerator<JsonlRecord> {
  for await (const lines of jsonlLineBatches(createReadStream(path))) for (const line of lines) yield parseRecord(path, line);
}

/** Read a whole JSONL file. */
export function readJsonlSync(path: string): JsonlRecord[] {
  const splitter = new JsonlSplitter();
  return [...splitter.push(readFileSync(path)), ...splitter.end()].map((line) => parseRecord(path, line));
}
