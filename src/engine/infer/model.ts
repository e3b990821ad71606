// A model ready to generate: a HF folder (base, or a full fine-tune), optionally with a PEFT LoRA
// adapter merged into its weights, its tokenizer and chat template, and the KV-cache decoder.
//
// LoRA two ways:
//   loadModelForInference merges the adapter at load (W ← W + (α/r)·B·A): one adapter per loaded
//     model, and decoding costs exactly what the base costs;
//   loadSharedBase keeps one resident base and applies each adapter unmerged, as (x·A)·B matmuls
//     in the step graph, so many fine-tuned models cost one base plus their small A/B tensors.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../models/config.ts';
import { eosTokenIds } from '../models/config.ts';
import { llamaWeightShapes } from '../models/llama.ts';
import { loadHfModel } from '../io/hf-model.ts';
import type { HostTensor } from '../io/safetensors.ts';
import { loadPeftAdapter, loraPairs, type PeftAdapter } from '../io/peft.ts';
import { loadTokenizer, type HfTokenizer } from '../data/tokenizer.ts';
import { ChatFormatter, type ChatMessage, type ToolDefinition } from '../data/chat-format.ts';
import type { SessionSettings } from '../runtime/session.ts';
import { adapterWeights, inferenceWeights } from './decoder.ts';
import { DecoderSteps, type StepAdapter } from './steps.ts';
import { DecodeBatcher } from './batcher.ts';
import { generate, type GenerateOptions, type GenerationResult, type OnToken } from './generate.ts';

export interface ModelSource {
  /** The base model's HF folder (config.json, safetensors, tokenizer files). */
  baseModelDir: string;
  /** A PEFT LoRA adapter folder trained on that base: merged into the weights at load. */
  adapterDir?: string;
  /** A full fine-tuned HF folder: its weights replace the base's (tokenizer from here when present). */
  modelDir?: string;
}

export interface InferenceModel {
  readonly config: ModelConfig;
  readonly tokenizer: HfTokenizer;
  /** Ids that end generation: config.json, generation_config.json and the tokenizer's eos_token. */
  readonly eosTokenIds: number[];
  /** Prompt plus completion may not exceed this (max_position_embeddings). */
  readonly contextLength: number;
  generate(promptIds: number[], options?: GenerateOptions, onToken?: OnToken): Promise<GenerationResult>;
  /** Compiles the step shapes of generations up to `positions` long (default: the context length). */
  warmup(positions?: number): Promise<void>;
  /** Logits for the token after `ids` (one prefill; for tests and tools). */
  nextTokenLogits(ids: number[]): Promise<Float32Array>;
  release(): Promise<void>;
}

/** PEFT's scaling of a module of rank r: α/r, or α/√r with rsLoRA. */
function loraScale(adapter: PeftAdapter, r: number): number {
  return adapter.rawConfig.use_rslora === true ? adapter.settings.alpha / Math.sqrt(r) : adapter.settings.alpha / r;
}

/** Adds (α/r)·B·A of every adapted module to its base weight, in place. */
export function mergeLoraAdapter(weights: Map<string, HostTensor>, adapterDir: string): void {
  const adapter = loadPeftAdapter(adapterDir);
  for (const [module, { A, B }] of loraPairs(adapter.tensors)) {
    const base = weights.get(`${module}.weight`);
    if (!base) throw new Error(`${adapterDir}: adapter module ${module} is not in the base model`);
    const [outF, inF] = base.shape;
    const r = A.shape[0];
    if (A.shape[1] !== inF || B.shape[0] !== outF || B.shape[1] !== r) {
      throw new Error(`${adapterDir}: ${module} lora_A [${A.shape}] / lora_B [${B.shape}] do not fit weight [${base.shape}]`);
    }
    const scale = loraScale(adapter, r);
    const w = base.data;
    const a = A.data;
    const b = B.data;
    const row = new Float64Array(inF);
    for (let o = 0; o < outF; o++) {
      row.fill(0);
      for (let k = 0; k < r; k++) {
        const bk = b[o * r + k];
        if (bk === 0) continue;
        const aRow = k * inF;
        for (let i = 0; i < inF; i++) row[i] += bk * a[aRow + i];
      }
      const wRow = o * inF;
      for (let i = 0; i < inF; i++) w[wRow + i] += scale * row[i];
    }
  }
}

function generationConfigEos(dir: string): number[] {
  const path = join(dir, 'generation_config.json');
  if (!existsSync(path)) return [];
  const eos = (JSON.parse(readFileSync(path, 'utf8')) as { eos_token_id?: unknown }).eos_token_id;
  return (Array.isArray(eos) ? eos : [eos]).filter((x): x is number => typeof x === 'number');
}

export interface InferenceOptions extends SessionSettings {
  /**
   * Generations that run at once on this model, interleaved token by token; later ones wait in
   * FIFO order. Bounds KV-cache memory at this many caches (default 4).
   */
  maxConcurrentGenerations?: number;
  /**
   * Concurrent generations share decode steps (one batched step per token for all of them, see
   * batcher.ts). Default false: on ORT's CPU provider a MatMul with more than one row repacks its
   * weight operand on every call when weights are inputs (not prepacked initializers), so a
   * step for 4 sequences costs about 4 single-sequence steps (bench:infer batch_decode_tok_s on
   * the SmolLM2-135M shape: 16.5 vs 18.1 tok/s single, measured on a loaded machine); without
   * batching, concurrent generations interleave token by token instead.
   */
  batchDecode?: boolean;
}

/** A FIFO gate: at most `limit` holders at a time. */
class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // hand the slot over directly, so `active` stays counted
      else this.active--;
    }
  }
}

export async function loadModelForInference(source: ModelSource, settings: InferenceOptions = {}): Promise<InferenceModel> {
  const base = loadBase(source, settings);
  return modelOver(base, undefined, () => base.steps.release());
}

interface LoadedBase {
  /** Generations at once (the gate's limit, and the slots of a DecodeBatcher); 0 slots = no batching. */
  batchSlots: number;
  config: ModelConfig;
  tokenizer: HfTokenizer;
  eosTokenIds: number[];
  steps: DecoderSteps;
  gate: Gate;
}

function loadBase(source: ModelSource, settings: InferenceOptions): LoadedBase {
  const weightsDir = source.modelDir ?? source.baseModelDir;
  const tokenizerDir = source.modelDir && existsSync(join(source.modelDir, 'tokenizer.json')) ? source.modelDir : source.baseModelDir;
  const { config, weights } = loadHfModel(weightsDir);
  for (const [name, shape] of llamaWeightShapes(config)) {
    const w = weights.get(name);
    if (!w) throw new Error(`${weightsDir}: no weight ${name}`);
    if (w.shape.join(',') !== shape.join(',')) throw new Error(`${weightsDir}: ${name} is [${w.shape}], expected [${shape}]`);
  }
  if (source.adapterDir) mergeLoraAdapter(weights, source.adapterDir);
  const layout = inferenceWeights(config, (name) => {
    const w = weights.get(name)!;
    weights.delete(name); // the HF copy can go as soon as its layer is converted
    return w.data;
  });
  const { maxConcurrentGenerations = 4, batchDecode = false, ...sessionSettings } = settings;
  const tokenizer = loadTokenizer(tokenizerDir);
  const eos = [...new Set([...eosTokenIds(config), ...generationConfigEos(tokenizerDir), ...(tokenizer.eosTokenId !== null ? [tokenizer.eosTokenId] : [])])];
  return {
    batchSlots: batchDecode && maxConcurrentGenerations > 1 ? maxConcurrentGenerations : 0,
    config,
    tokenizer,
    eosTokenIds: eos,
    steps: new DecoderSteps(config, layout, sessionSettings),
    gate: new Gate(maxConcurrentGenerations),
  };
}

function modelOver(base: LoadedBase, adapter: StepAdapter | undefined, release: () => Promise<void>): InferenceModel {
  const { config, tokenizer, steps, gate } = base;
  const batcher = base.batchSlots > 0 ? new DecodeBatcher(steps, base.batchSlots, adapter) : null;
  const context = {
    steps,
    tokenizer,
    eosTokenIds: base.eosTokenIds,
    contextLength: config.maxPositionEmbeddings,
    adapter,
    ...(batcher ? { openSequence: () => batcher.open() } : {}),
  };
  return {
    config,
    tokenizer,
    eosTokenIds: base.eosTokenIds,
    contextLength: config.maxPositionEmbeddings,
    generate: (promptIds, options, onToken) => gate.run(() => generate(context, promptIds, options, onToken)),
    warmup: (positions = config.maxPositionEmbeddings) => steps.warmup(positions, adapter?.rank ?? 0, Math.max(1, base.batchSlots)),
    nextTokenLogits: (ids) => steps.forward(steps.newCache(), ids, adapter),
    release,
  };
}

/** One resident base model serving any number of LoRA adapters, each applied unmerged. */
export interface SharedBaseModel {
  readonly config: ModelConfig;
  readonly tokenizer: HfTokenizer;
  /**
   * A model running this base with the adapter in `adapterDir` as separate low-rank matmuls (the
   * bare base without one). Adapters only add their A/B tensors; weights, compiled steps and the
   * concurrency bound are the base's. Releasing such a model releases nothing of the base.
   */
  withAdapter(adapterDir?: string): InferenceModel;
  release(): Promise<void>;
}

/** Rank buckets of compiled LoRA steps: an adapter of rank r runs at the next power of two ≥ 8. */
export function loraRankBucket(rank: number): number {
  let bucket = 8;
  while (bucket < rank) bucket *= 2;
  return bucket;
}

export async function loadSharedBase(baseModelDir: string, settings: InferenceOptions = {}): Promise<SharedBaseModel> {
  const base = loadBase({ baseModelDir }, settings);
  return {
    config: base.config,
    tokenizer: base.tokenizer,
    withAdapter: (adapterDir) => {
      if (!adapterDir) return modelOver(base, undefined, async () => {});
      const adapter = loadPeftAdapter(adapterDir);
      const pairs = loraPairs(adapter.tensors);
      const rank = Math.max(...[...pairs.values()].map((p) => p.A.shape[0]));
      const bucket = loraRankBucket(rank);
      const weights = adapterWeights(base.config, pairs, (r) => loraScale(adapter, r), bucket);
      return modelOver(base, { rank: bucket, weights }, async () => {});
    },
    release: () => base.steps.release(),
  };
}

/** Prompt ids for a plain-text prompt (/v1/completions): the tokenizer's own special tokens (BOS) included. */
export function textPrompt(model: InferenceModel, text: string): number[] {
  return model.tokenizer.encode(text, { addSpecialTokens: true });
}

const formatters = new WeakMap<InferenceModel, ChatFormatter>();

/** Prompt ids for a conversation through the model's chat template, ending with the assistant header. */
export function chatPrompt(model: InferenceModel, messages: ChatMessage[], tools?: ToolDefinition[]): number[] {
  let formatter = formatters.get(model);
  if (!formatter) formatters.set(model, (formatter = new ChatFormatter(model.tokenizer)));
  return formatter.promptIds(messages, tools);
}
