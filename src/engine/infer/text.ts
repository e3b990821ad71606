// Token ids → text while generating: incremental detokenisation and stop strings.
//
// Decoding one token at a time is wrong for byte-level BPE (a character may span tokens) and for
// SentencePiece (a word's leading space depends on what precedes it). As vLLM does, each new token
// decodes a short window — `ids[prefixOffset:]` — and emits only what it adds to the text of
// `ids[prefixOffset:readOffset]`; a window that ends in U+FFFD (an unfinished character) waits.

import type { HfTokenizer } from '../data/tokenizer.ts';

const REPLACEMENT = '\uFFFD';

export class IncrementalDecoder {
  private readonly ids: number[];
  private prefixOffset: number;
  private readOffset: number;

  /** `context`: the last few prompt ids, so that the first generated word gets its leading space right. */
  constructor(private readonly tokenizer: HfTokenizer, context: number[] = []) {
    this.ids = context.slice(-5);
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
  }

  private decode(from: number, to = this.ids.length): string {
    return this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: true });
  }

  /** Adds a token; returns the text it completes ('' while a character is still unfinished). */
  push(id: number): string {
    this.ids.push(id);
    const before = this.decode(this.prefixOffset, this.readOffset);
    const now = this.decode(this.prefixOffset);
    if (now.length <= before.length || now.endsWith(REPLACEMENT)) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return now.slice(before.length);
  }

  /** Whatever is still held back (e.g. an unfinished character at the token limit). */
  flush(): string {
    const before = this.decode(this.prefixOffset, this.readOffset);
    const now = this.decode(this.prefixOffset);
    this.prefixOffset = this.readOffset = this.ids.length;
    return now.length > before.length ? now.slice(before.length) : '';
  }
}

/**
 * Stop strings over streamed text. Text that might be the start of a stop string is held back
 * until it is known not to be one, so nothing of a stop string is ever emitted; the text before
 * the first stop string is emitted and the rest is dropped.
 */
export class StopStrings {
  private pending = '';
  stopped = false;

  constructor(private readonly stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Adds text; returns what can be emitted now. After a stop string, `stopped` is true. */
  push(text: string): string {
    if (this.stopped) return '';
    this.pending += text;
    if (this.stops.length === 0) return this.take(this.pending.length);
    let first = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      this.stopped = true;
      const emit = this.pending.slice(0, first);
      this.pending = '';
      return emit;
    }
    return this.take(this.pending.length - this.heldBack());
  }

  /** Everything still held back (generation ended without a stop string). */
  flush(): string {
    return this.stopped ? '' : this.take(this.pending.length);
  }

  /** Length of the longest suffix of `pending` that is a proper prefix of a stop string. */
  private heldBack(): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.pending.length); n > longest; n--) {
        if (this.pending.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }

  private take(n: number): string {
    const emit = this.pending.slice(0, n);
    this.pending = this.pending.slice(n);
    return emit;
  }
}

// GPT-2's byte ↔ printable-character table (byte-level BPE vocabularies are written in it).
let byteLevelDecoder: Map<string, number> | null = null;
function byteLevelTable(): Map<string, number> {
  if (byteLevelDecoder) return byteLevelDecoder;
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const code = printable.includes(b) ? b : 256 + extra++;
    table.set(String.fromCodePoint(code), b);
  }
  return (byteLevelDecoder = table);
}

/** A token's text and UTF-8 bytes, as OpenAI's logprobs report them. */
export function tokenText(tokenizer: HfTokenizer, id: number): { token: string; bytes: number[] } {
  let token = tokenizer.decode([id]);
  // SentencePiece decoders drop the leading space of the first token; a token alone is always first.
  const piece = tokenizer.idToToken(id) ?? '';
  if (piece.startsWith('\u2581') && !token.startsWith(' ')) token = ' ' + token;
  if (!token.includes(REPLACEMENT)) return { token, bytes: [...Buffer.from(token, 'utf8')] };
  // Part of a multi-byte character: recover the raw bytes from the vocabulary entry.
  const byteFallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (byteFallback) return { token, bytes: [parseInt(byteFallback[1], 16)] };
  const table = byteLevelTable();
  const chars = [...piece];
  if (chars.every((c) => table.has(c))) return { token, bytes: chars.map((c) => table.get(c)!) };
  return { token, bytes: [...Buffer.from(token, 'utf8')] };
}
