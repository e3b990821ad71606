// Constrained decoding: a token-level mask applied to the logits before each token is sampled, so
// the generated text always stays a prefix of a valid document (and ends as a complete one).
//
// A constraint is described by plain data (`ConstraintSpec`) so that it crosses to the inference
// worker with the rest of GenerateOptions; generate() turns it into a `TokenConstraint` there.
// The mask walks a trie of the vocabulary's token texts from the current grammar state: a branch
// is cut at its first character the grammar refuses, so the cost follows the number of allowed
// prefixes, not the vocabulary size. Inside a JSON string, tokens free of `"`, `\` and control
// characters all keep the state unchanged and are allowed in one go.
//
// Budget: a token is allowed only if the shortest completion after it (as the tokenizer splits
// that text) still fits in the tokens left, so the document is complete by max_tokens; when no
// token fits, the first token of the shortest completion is forced.

import type { HfTokenizer } from '../../data/tokenizer.ts';
import { JsonGrammar, type JsonSchema, type JsonState } from './json.ts';

export type { JsonSchema } from './json.ts';

export type ConstraintSpec = {
  type: 'json';
  /** JSON Schema the value must follow; absent: any JSON object (response_format json_object). */
  schema?: JsonSchema;
  /** Fixed text before the JSON value (e.g. a tool-call opening tag). */
  prefix?: string;
  /** Fixed text after it. */
  suffix?: string;
};

export interface TokenConstraint {
  /**
   * Sets the logits of tokens that may not come next to −Infinity. `remaining`: tokens that may
   * still be generated, this one included (the document must be completable within them).
   */
  mask(logits: Float32Array, remaining: number): void;
  /** The token that was chosen. */
  accept(tokenId: number): void;
}

interface TrieNode {
  children: Map<string, TrieNode>;
  ids: number[];
}

interface Vocabulary {
  /** Every token with a usable text, by its characters. */
  trie: TrieNode;
  /** Only tokens with `"`, `\` or a control character. */
  specialTrie: TrieNode;
  /** Tokens whose text has none of those: inside a JSON string they change nothing. */
  plain: number[];
  texts: (string | null)[];
}

const vocabularies = new WeakMap<HfTokenizer, Vocabulary>();

function newNode(): TrieNode {
  return { children: new Map(), ids: [] };
}

function insert(root: TrieNode, text: string, id: number): void {
  let node = root;
  for (const c of text) {
    let child = node.children.get(c);
    if (!child) node.children.set(c, (child = newNode()));
    node = child;
  }
  node.ids.push(id);
}

/**
 * Each token's text as generation produces it. Decoded after an anchor token so that tokenizers
 * that drop a leading space at the start of a text (SentencePiece) keep it; tokens that decode to
 * nothing (special tokens) or to part of a character are never chosen under a constraint.
 */
function vocabularyOf(tokenizer: HfTokenizer): Vocabulary {
  const known = vocabularies.get(tokenizer);
  if (known) return known;
  const anchor = tokenizer.encode('a')[0];
  const anchorText = anchor === undefined ? '' : tokenizer.decode([anchor], { skipSpecialTokens: true });
  const texts: (string | null)[] = [];
  const trie = newNode();
  const specialTrie = newNode();
  const plain: number[] = [];
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    const full = tokenizer.decode(anchor === undefined ? [id] : [anchor, id], { skipSpecialTokens: true });
    const text = full.startsWith(anchorText) ? full.slice(anchorText.length) : tokenizer.decode([id], { skipSpecialTokens: true });
    if (text.length === 0 || text.includes('\uFFFD')) {
      texts.push(null);
      continue;
    }
    texts.push(text);
    insert(trie, text, id);
    if (/["\\\u0000-\u001f]/.test(text)) insert(specialTrie, text, id);
    else plain.push(id);
  }
  const vocabulary = { trie, specialTrie, plain, texts };
  vocabularies.set(tokenizer, vocabulary);
  return vocabulary;
}

class JsonConstraint implements TokenConstraint {
  private readonly grammar: JsonGrammar;
  private state: JsonState;
  private broken = false;
  private readonly eos: Set<number>;
  /** Tokens of a completion text, by text (the same few texts recur all through a generation). */
  private readonly tokenCounts = new Map<string, number>();

  constructor(spec: ConstraintSpec, private readonly vocabulary: Vocabulary, private readonly tokenizer: HfTokenizer, eosTokenIds: number[]) {
    this.grammar = new JsonGrammar(spec.schema ?? { type: 'object' });
    this.state = this.grammar.initial(spec.prefix ?? '', spec.suffix ?? '');
    this.eos = new Set(eosTokenIds);
  }

  /** How many tokens the shortest completion from `state` takes (its text as the tokenizer splits it). */
  private closingTokens(state: JsonState): number {
    const text = this.grammar.completion(state);
    if (text === null) return Infinity;
    if (text === '') return 0;
    let count = this.tokenCounts.get(text);
    if (count === undefined) this.tokenCounts.set(text, (count = this.tokenizer.encode(text).length));
    return count;
  }

  mask(logits: Float32Array, remaining: number): void {
    if (this.broken) return;
    const allowed = new Uint8Array(logits.length);
    let any = this.collect(allowed, remaining - 1);
    if (!any) any = this.forceCompletion(allowed);
    if (!any) any = this.collect(allowed, Infinity); // cannot finish in time: stay valid at least
    if (this.grammar.isComplete(this.state) || !any) for (const id of this.eos) if (id < allowed.length) allowed[id] = 1;
    for (let i = 0; i < logits.length; i++) if (!allowed[i]) logits[i] = -Infinity;
  }

  /** Tight on tokens: only the first token of the shortest completion. */
  private forceCompletion(allowed: Uint8Array): boolean {
    const text = this.grammar.completion(this.state);
    if (!text) return false;
    const first = this.tokenizer.encode(text)[0];
    const piece = first === undefined ? null : this.vocabulary.texts[first];
    if (piece == null || this.grammar.feed(this.state, piece) === undefined || first >= allowed.length) return false;
    allowed[first] = 1;
    return true;
  }

  /** Marks tokens that keep the text valid and completable within `budget` more tokens. */
  private collect(allowed: Uint8Array, budget: number): boolean {
    const { grammar } = this;
    let any = false;
    const visit = (node: TrieNode, state: JsonState) => {
      for (const [c, child] of node.children) {
        const next = grammar.feedChar(state, c);
        if (next === undefined) continue;
        if (child.ids.length > 0 && (budget === Infinity || this.closingTokens(next) <= budget)) {
          for (const id of child.ids) if (id < allowed.length) allowed[id] = 1;
          any = true;
        }
        visit(child, next);
      }
    };
    if (grammar.inPlainString(this.state)) {
      if (budget === Infinity || this.closingTokens(this.state) <= budget) {
        for (const id of this.vocabulary.plain) if (id < allowed.length) allowed[id] = 1;
        any ||= this.vocabulary.plain.length > 0;
      }
      visit(this.vocabulary.specialTrie, this.state);
    } else {
      visit(this.vocabulary.trie, this.state);
    }
    return any;
  }

  accept(tokenId: number): void {
    if (this.broken || this.eos.has(tokenId)) return;
    const text = this.vocabulary.texts[tokenId];
    const next = text == null ? undefined : this.grammar.feed(this.state, text);
    if (next === undefined) this.broken = true; // cannot happen through mask(); stop constraining rather than fail
    else this.state = next;
  }
}

export function createTokenConstraint(spec: ConstraintSpec, tokenizer: HfTokenizer, eosTokenIds: number[]): TokenConstraint {
  switch (spec.type) {
    case 'json':
      return new JsonConstraint(spec, vocabularyOf(tokenizer), tokenizer, eosTokenIds);
    default:
      throw new Error(`unknown constraint type ${JSON.stringify((spec as { type: unknown }).type)}`);
  }
}
