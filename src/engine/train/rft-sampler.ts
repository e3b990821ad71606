// Sampling from the current policy during reinforcement training, with the inference engine's
// KV-cache decoder over one resident copy of the base weights:
//  - LoRA: the base stays resident and the current A/B tensors are fed as an unmerged adapter
//    ((x·A)·B, decoder.ts adapterWeights), refreshed after every optimizer step at no compile cost;
//  - full fine-tuning: the weights themselves change, so each refresh builds new decoder sessions.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HfTokenizer } from '../data/tokenizer.ts';
import type { ModelConfig } from '../models/config.ts';
import { eosTokenIds } from '../models/config.ts';
import { loraAName, loraBName } from '../models/lora.ts';
import type { SessionSettings } from '../runtime/session.ts';
import { adapterWeights, inferenceWeights } from '../infer/decoder.ts';
import { DecoderSteps, type StepAdapter } from '../infer/steps.ts';
import { generate, type GenerationResult } from '../infer/generate.ts';
import { loraRankBucket } from '../infer/model.ts';
import type { ModelSetup } from './step.ts';

/** End-of-generation ids: config.json, generation_config.json and the tokenizer's eos token. */
export function stopTokenIds(cfg: ModelConfig, modelDir: string, tokenizer: HfTokenizer): number[] {
  const ids = new Set(eosTokenIds(cfg));
  const path = join(modelDir, 'generation_config.json');
  if (existsSync(path)) {
    const eos = (JSON.parse(readFileSync(path, 'utf8')) as { eos_token_id?: unknown }).eos_token_id;
    for (const id of Array.isArray(eos) ? eos : [eos]) if (typeof id === 'number') ids.add(id);
  }
  if (tokenizer.eosTokenId !== null) ids.add(tokenizer.eosTokenId);
  return [...ids];
}

export class PolicySampler {
  private steps: DecoderSteps | null = null;
  private adapter: StepAdapter | undefined;

  constructor(
    private readonly setup: ModelSetup,
    /** Base weights by HF name (the frozen tensors under LoRA). */
    private readonly base: Map<string, Float32Array>,
    private readonly tokenizer: HfTokenizer,
    private readonly eos: number[],
    private readonly settings: SessionSettings = {},
  ) {}

  /** Samples from now on use these trainable tensors (call after every optimizer step). */
  async refresh(params: Map<string, Float32Array>): Promise<void> {
    const { cfg, lora } = this.setup;
    if (lora) {
      this.steps ??= new DecoderSteps(cfg, inferenceWeights(cfg, (n) => this.base.get(n)!), this.settings);
      const pairs = new Map(
        lora.targets.map((t) => [
          t.path,
          {
            A: { shape: [lora.rank, t.inFeatures], data: params.get(loraAName(t.path))! },
            B: { shape: [t.outFeatures, lora.rank], data: params.get(loraBName(t.path))! },
          },
        ]),
      );
      const R = loraRankBucket(lora.rank);
      this.adapter = { rank: R, weights: adapterWeights(cfg, pairs, (r) => lora.alpha / r, R) };
      return;
    }
    await this.steps?.release();
    this.steps = new DecoderSteps(cfg, inferenceWeights(cfg, (n) => params.get(n) ?? this.base.get(n)!), this.settings);
  }

  /** One completion of `promptIds` at temperature 1 (EOS included in tokenIds when it ended it). */
  sample(promptIds: number[], maxTokens: number, seed: number, signal?: AbortSignal): Promise<GenerationResult> {
    if (!this.steps) throw new Error('PolicySampler: refresh() first');
    const context = {
      steps: this.steps,
      tokenizer: this.tokenizer,
      eosTokenIds: this.eos,
      contextLength: this.setup.cfg.maxPositionEmbeddings,
      adapter: this.adapter,
    };
    return generate(context, promptIds, { maxTokens, temperature: 1, seed, signal });
  }

  async release(): Promise<void> {
    await this.steps?.release();
    this.steps = null;
  }
}
