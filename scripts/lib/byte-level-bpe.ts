// A deterministic byte-level BPE trainer (GPT-2 style) producing Hugging Face tokenizer.json.
// Written here rather than pulled in because no maintained pure-JS trainer exists and the tiny
// model's vocabulary only needs a few hundred merges over a small corpus; encoding at run time
// goes through @huggingface/tokenizers, which is what the engine uses for every model.

/** GPT-2's reversible byte → printable-character map, as the ByteLevel pre-tokenizer uses. */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) printable.push(b);
  for (let b = '¡'.charCodeAt(0); b <= '¬'.charCodeAt(0); b++) printable.push(b);
  for (let b = '®'.charCodeAt(0); b <= 'ÿ'.charCodeAt(0); b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return map;
}

/** The split pattern of the ByteLevel pre-tokenizer (GPT-2). */
const PRE_TOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface TrainedBpe {
  /** Token string → id; ids 0..255 are the 256 bytes, then one per merge. */
  vocab: Record<string, number>;
  /** "left right" pairs in merge order. */
  merges: string[];
}

/**
 * Learn merges until the vocabulary reaches `vocabSize` (bytes included) or no pair occurs at
 * least `minFrequency` times. Ties between equally frequent pairs break on the pair's text so the
 * result depends on nothing but the corpus.
 */
export function trainByteLevelBpe(corpus: string[], vocabSize: number, minFrequency = 2): TrainedBpe {
  const byteChars = bytesToUnicode();
  const encoder = new TextEncoder();
  const wordCounts = new Map<string, number>();
  for (const text of corpus) {
    for (const piece of text.match(PRE_TOKENIZE) ?? []) {
      const word = Array.from(encoder.encode(piece), (b) => byteChars[b]).join('\u0000');
      wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
    }
  }
  // Each distinct word as its current symbol sequence, with how often it occurs.
  const words = [...wordCounts].map(([word, count]) => ({ symbols: word.split('\u0000'), count }));

  const vocab: Record<string, number> = {};
  byteChars.forEach((char, id) => (vocab[char] = id));
  const merges: string[] = [];
  while (Object.keys(vocab).length < vocabSize) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const pair = symbols[i] + ' ' + symbols[i + 1];
        pairCounts.set(pair, (pairCounts.get(pair) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 0;
    for (const [pair, count] of pairCounts) {
      if (count > bestCount || (count === bestCount && best !== null && pair < best)) {
        best = pair;
        bestCount = count;
      }
    }
    if (best === null || bestCount < minFrequency) break;
    const [left, right] = best.split(' ');
    const merged = left + right;
    merges.push(best);
    vocab[merged] = Object.keys(vocab).length;
    for (const word of words) {
      const next: string[] = [];
      for (let i = 0; i < word.symbols.length; i++) {
        if (i + 1 < word.symbols.length && word.symbols[i] === left && word.symbols[i + 1] === right) {
          next.push(merged);
          i++;
        } else {
          next.push(word.symbols[i]);
        }
      }
      word.symbols = next;
    }
  }
  return { vocab, merges };
}

export interface SpecialToken {
  content: string;
  /** Special tokens are skipped by decode(skip_special_tokens); plain added tokens are not. */
  special: boolean;
}

/** A tokenizer.json (HF tokenizers format) for a byte-level BPE, added tokens after the vocabulary. */
export function byteLevelTokenizerJson(bpe: TrainedBpe, addedTokens: SpecialToken[]): Record<string, unknown> {
  const firstAddedId = Object.keys(bpe.vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens.map((token, i) => ({
      id: firstAddedId + i,
      content: token.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: token.special,
    })),
    normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: bpe.vocab,
      merges: bpe.merges,
    },
  };
}
