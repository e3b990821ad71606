// Taking a fine-tuned model away: as the PEFT adapter it is (LoRA jobs), as a merged Hugging Face
// folder that transformers (and our own loader) read without PEFT, or as one GGUF file for
// llama.cpp and everything built on it. Knows folders and files only; the API and CLI decide which
// model's folders these are.

import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { loadHfModel, saveHfModel, type HfModel } from '../io/hf-model.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadPeftAdapter, loraPairs } from '../io/peft.ts';
import type { FloatDtype } from '../io/safetensors.ts';
import { mergeLoraAdapter } from '../infer/model.ts';
import { llamaWeightShapes } from '../models/llama.ts';
import { writeModelGguf, type GgufDtype } from './gguf.ts';

export { writeModelGguf, permuteForGgmlRope, ggufTensorName, type GgufDtype } from './gguf.ts';
export { tarDirectory, type TarOptions } from './tar.ts';

export type MergedDtype = 'f32' | 'f16' | 'bf16';

const SAFETENSORS_DTYPE: Record<MergedDtype, FloatDtype> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** Files that travel with the weights of a merged folder (the ones present in the source). */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];

/** Whether a folder holds a PEFT adapter (as opposed to full HF weights). */
export function isPeftAdapterDir(dir: string): boolean {
  return existsSync(join(dir, ADAPTER_CONFIG_FILE));
}

export interface PeftExportOptions {
  /** Written as base_model_name_or_path (e.g. the base model's name instead of a server path). */
  baseModelName?: string;
}

/**
 * Copies a PEFT adapter after checking it is one PEFT loads: a LORA adapter_config.json and
 * adapter_model.safetensors where every module has both lora_A and lora_B of matching rank.
 */
export function exportPeft(adapterDir: string, outDir: string, options: PeftExportOptions = {}): void {
  if (!isPeftAdapterDir(adapterDir)) throw new Error(`${adapterDir}: no ${ADAPTER_CONFIG_FILE} (not a PEFT adapter; full fine-tunes export as safetensors or gguf)`);
  const adapter = loadPeftAdapter(adapterDir);
  const pairs = loraPairs(adapter.tensors);
  if (pairs.size === 0) throw new Error(`${adapterDir}: the adapter has no LoRA tensors`);
  for (const [module, { A, B }] of pairs) {
    if (A.shape.length !== 2 || B.shape.length !== 2 || A.shape[0] !== B.shape[1]) {
      throw new Error(`${adapterDir}: ${module} lora_A [${A.shape}] and lora_B [${B.shape}] disagree on the rank`);
    }
  }
  mkdirSync(outDir, { recursive: true });
  const config = { ...adapter.rawConfig };
  if (options.baseModelName !== undefined) config.base_model_name_or_path = options.baseModelName;
  writeFileSync(join(outDir, ADAPTER_CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
  copyFileSync(join(adapterDir, ADAPTER_WEIGHTS_FILE), join(outDir, ADAPTER_WEIGHTS_FILE));
}

/** Base weights with the adapter (if any) merged in, checked against the architecture's shapes. */
function mergedWeights(modelDir: string, adapterDir: string | null): HfModel {
  const model = loadHfModel(modelDir);
  for (const [name, shape] of llamaWeightShapes(model.config)) {
    const w = model.weights.get(name);
    if (!w) throw new Error(`${modelDir}: no weight ${name}`);
    if (w.shape.join(',') !== shape.join(',')) throw new Error(`${modelDir}: ${name} is [${w.shape}], expected [${shape}]`);
  }
  if (adapterDir) mergeLoraAdapter(model.weights, adapterDir);
  return model;
}

function readJson(path: string): Record<string, unknown> | null {
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>) : null;
}

export interface MergedExportOptions {
  /** Start a new safetensors shard past this many bytes (default 2 GiB, as saveHfModel). */
  maxShardBytes?: number;
}

/**
 * A merged Hugging Face folder: config.json, model.safetensors (or shards with an index) in `dtype`,
 * tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json.
 * `modelDir` is the base model (with `adapterDir` a LoRA adapter trained on it) or a full
 * fine-tune's folder (adapterDir null). Tokenizer files come from `modelDir`.
 */
export function exportMerged(modelDir: string, adapterDir: string | null, outDir: string, dtype: MergedDtype = 'f32', options: MergedExportOptions = {}): void {
  if (!(dtype in SAFETENSORS_DTYPE)) throw new Error(`dtype ${dtype} is not one of f32, f16, bf16`);
  const { rawConfig, weights } = mergedWeights(modelDir, adapterDir);
  saveHfModel(outDir, rawConfig, weights, SAFETENSORS_DTYPE[dtype], { maxShardBytes: options.maxShardBytes });
  for (const file of TOKENIZER_FILES) if (existsSync(join(modelDir, file))) copyFileSync(join(modelDir, file), join(outDir, file));
  if (!existsSync(join(outDir, 'tokenizer.json'))) throw new Error(`${modelDir}: no tokenizer.json`);

  const generation = readJson(join(modelDir, 'generation_config.json')) ?? {
    bos_token_id: rawConfig.bos_token_id,
    eos_token_id: rawConfig.eos_token_id,
    pad_token_id: rawConfig.pad_token_id,
  };
  writeFileSync(join(outDir, 'generation_config.json'), JSON.stringify(generation, null, 2) + '\n');
  if (!existsSync(join(outDir, 'special_tokens_map.json'))) {
    const tokenizerConfig = readJson(join(outDir, 'tokenizer_config.json')) ?? {};
    const map: Record<string, unknown> = {};
    for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token', 'additional_special_tokens']) {
      if (tokenizerConfig[key] !== undefined && tokenizerConfig[key] !== null) map[key] = tokenizerConfig[key];
    }
    writeFileSync(join(outDir, 'special_tokens_map.json'), JSON.stringify(map, null, 2) + '\n');
  }
}

export interface GgufExportOptions {
  dtype: GgufDtype;
  /** A LoRA adapter trained on `modelDir`, merged before writing. */
  adapterDir?: string | null;
  /** general.name (default: the folder's name). */
  name?: string;
}

/** One GGUF file of `modelDir` (a HF folder with tokenizer.json), unquantized F32 or F16. */
export function exportGguf(modelDir: string, outFile: string, options: GgufExportOptions): void {
  if (options.dtype !== 'f32' && options.dtype !== 'f16') throw new Error(`GGUF dtype ${String(options.dtype)} is not one of f32, f16`);
  if (!existsSync(join(modelDir, 'tokenizer.json'))) throw new Error(`${modelDir}: no tokenizer.json`);
  const { config, weights } = mergedWeights(modelDir, options.adapterDir ?? null);
  writeModelGguf({ config, weights, tokenizerDir: modelDir, name: options.name ?? basename(modelDir) }, outFile, options.dtype);
}

export { runExport, runExportInWorker, EXPORT_FORMATS, type ExportFormat, type ExportJob } from './run.ts';
