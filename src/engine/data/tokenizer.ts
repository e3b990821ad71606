// A Hugging Face model folder's tokenizer: tokenizer.json through @huggingface/tokenizers (the
// maintained JS port of HF tokenizers), and tokenizer_config.json for the chat template and the
// special tokens that the template refers to (bos_token, eos_token, …).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

type Json = Record<string, unknown>;

export interface EncodeOptions {
  /** Let the tokenizer's post-processor add BOS/EOS (as `tokenizer(text)` does in transformers). */
  addSpecialTokens?: boolean;
}

export class HfTokenizer {
  /** Rendered with @huggingface/jinja by chat-format.ts; null when the folder defines none. */
  readonly chatTemplate: string | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  /** Every id the tokenizer can produce, added tokens included (may be < the model's vocab_size). */
  readonly vocabSize: number;
  /** Whether encode() with special tokens puts BOS in front (Llama's add_bos_token). */
  readonly addsBos: boolean;
  /** Texts of the special added tokens (<|im_end|>, <|eot_id|>, </s>, …), longest first. */
  readonly specialTokens: string[];

  constructor(
    readonly tokenizer: Tokenizer,
    readonly tokenizerConfig: Json,
    chatTemplate: string | null,
  ) {
    this.chatTemplate = chatTemplate;
    this.bosToken = specialTokenText(tokenizerConfig.bos_token);
    this.eosToken = specialTokenText(tokenizerConfig.eos_token);
    this.padToken = specialTokenText(tokenizerConfig.pad_token);
    this.unkToken = specialTokenText(tokenizerConfig.unk_token);
    this.bosTokenId = this.idOf(this.bosToken);
    this.eosTokenId = this.idOf(this.eosToken);
    this.padTokenId = this.idOf(this.padToken);
    let largestId = -1;
    for (const id of tokenizer.get_vocab(true).values()) largestId = Math.max(largestId, id);
    this.vocabSize = largestId + 1;
    const probe = tokenizer.encode('a', { add_special_tokens: true }).ids;
    this.addsBos = this.bosTokenId !== null && probe[0] === this.bosTokenId;
    this.specialTokens = [...tokenizer.get_added_tokens_decoder().values()]
      .filter((token) => token.special)
      .map((token) => token.content)
      .sort((a, b) => b.length - a.length);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
  }

  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** Special token strings by name, as chat templates expect them (bos_token, eos_token, …). */
  templateVariables(): Record<string, string> {
    const variables: Record<string, string> = {};
    if (this.bosToken !== null) variables.bos_token = this.bosToken;
    if (this.eosToken !== null) variables.eos_token = this.eosToken;
    if (this.padToken !== null) variables.pad_token = this.padToken;
    if (this.unkToken !== null) variables.unk_token = this.unkToken;
    return variables;
  }

  private idOf(token: string | null): number | null {
    if (token === null) return null;
    return this.tokenizer.token_to_id(token) ?? null;
  }
}

/** Special tokens appear as plain strings or as AddedToken objects ({content, …}). */
function specialTokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as Json).content === 'string') return (value as Json).content as string;
  return null;
}

/**
 * The chat template of a folder: tokenizer_config.json's chat_template (a string, or a list of
 * named templates of which "default" is the chat one), else a chat_template.jinja file (newer
 * transformers save it separately).
 */
function findChatTemplate(dir: string, tokenizerConfig: Json): string | null {
  const raw = tokenizerConfig.chat_template;
  if (typeof raw === 'string') return raw;
  if (Array.isArray(raw)) {
    const named = raw as { name?: string; template?: string }[];
    const chosen = named.find((t) => t.name === 'default') ?? named[0];
    if (chosen?.template) return chosen.template;
  }
  const jinjaFile = join(dir, 'chat_template.jinja');
  if (existsSync(jinjaFile)) return readFileSync(jinjaFile, 'utf8');
  return null;
}

/** A folder's tokenizer_config.json ({} when it has none). */
export function readTokenizerConfig(dir: string): Json {
  const configPath = join(dir, 'tokenizer_config.json');
  return existsSync(configPath) ? (JSON.parse(readFileSync(configPath, 'utf8')) as Json) : {};
}

/** The chat template of a HF model folder without loading its tokenizer (null: it has none). */
export function readChatTemplate(dir: string): string | null {
  return findChatTemplate(dir, readTokenizerConfig(dir));
}

/** Load tokenizer.json and tokenizer_config.json from a HF model folder. */
export function loadTokenizer(dir: string): HfTokenizer {
  const tokenizerPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokenizerPath)) throw new Error(`${dir}: no tokenizer.json`);
  const tokenizerJson = JSON.parse(readFileSync(tokenizerPath, 'utf8')) as Json;
  const tokenizerConfig = readTokenizerConfig(dir);
  return new HfTokenizer(new Tokenizer(tokenizerJson, tokenizerConfig), tokenizerConfig, findChatTemplate(dir, tokenizerConfig));
}
