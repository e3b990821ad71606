// PEFT LoRA adapters as `peft` writes them, so `PeftModel.from_pretrained(base, dir)` loads ours:
// adapter_config.json (LoraConfig fields) and adapter_model.safetensors whose keys are the base
// model's module names under "base_model.model." with ".lora_A.weight" [r, in] and
// ".lora_B.weight" [out, r] (no adapter name: PEFT strips "default" when saving).

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type FloatDtype, type HostTensor } from './safetensors.ts';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const PEFT_PREFIX = 'base_model.model.';

export interface PeftAdapterSettings {
  /** Written as base_model_name_or_path. */
  baseModelName: string;
  rank: number;
  alpha: number;
  dropout: number;
  /** Module names, e.g. ["q_proj", "v_proj"]. */
  targetModules: string[];
}

/** PEFT key for a module's LoRA matrix: loraKey("model.layers.3.self_attn.q_proj", "A"). */
export function loraKey(modulePath: string, matrix: 'A' | 'B'): string {
  return `${PEFT_PREFIX}${modulePath}.lora_${matrix}.weight`;
}

function withPrefix(name: string): string {
  return name.startsWith(PEFT_PREFIX) ? name : PEFT_PREFIX + name;
}

/**
 * Write an adapter. Tensor names may be given with or without the "base_model.model." prefix
 * ("model.layers.0.self_attn.q_proj.lora_A.weight"); they are stored with it.
 */
export function savePeftAdapter(
  dir: string,
  settings: PeftAdapterSettings,
  tensors: Map<string, HostTensor>,
  dtype: FloatDtype = 'F32',
): void {
  mkdirSync(dir, { recursive: true });
  const adapterConfig = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: settings.baseModelName,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: settings.rank,
    rank_pattern: {},
    revision: null,
    target_modules: [...settings.targetModules].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
  };
  writeFileSync(join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(adapterConfig, null, 2) + '\n');
  const stored = new Map<string, HostTensor>();
  for (const [name, tensor] of tensors) stored.set(withPrefix(name), tensor);
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), stored, { dtype, metadata: { format: 'pt' } });
}

export interface PeftAdapter {
  settings: PeftAdapterSettings;
  /** adapter_config.json as read. */
  rawConfig: Record<string, unknown>;
  /** Keys exactly as stored ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"). */
  tensors: Map<string, HostTensor>;
}

/** An adapter's adapter_config.json, as read and as settings. */
export function readPeftAdapterConfig(dir: string): { settings: PeftAdapterSettings; rawConfig: Record<string, unknown> } {
  const rawConfig = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
  if (rawConfig.peft_type !== 'LORA') throw new Error(`${dir}: peft_type ${String(rawConfig.peft_type)} is not LORA`);
  const targets = rawConfig.target_modules;
  const settings: PeftAdapterSettings = {
    baseModelName: String(rawConfig.base_model_name_or_path ?? ''),
    rank: Number(rawConfig.r),
    alpha: Number(rawConfig.lora_alpha),
    dropout: Number(rawConfig.lora_dropout ?? 0),
    // PEFT also allows a regex string here; keep it as a one-element list.
    targetModules: Array.isArray(targets) ? targets.map(String) : typeof targets === 'string' ? [targets] : [],
  };
  return { settings, rawConfig };
}

export function loadPeftAdapter(dir: string): PeftAdapter {
  const { tensors } = readSafetensors(join(dir, ADAPTER_WEIGHTS_FILE));
  return { ...readPeftAdapterConfig(dir), tensors };
}

/**
 * Group an adapter's tensors per module: "model.layers.0.self_attn.q_proj" → {A, B}.
 * Handles keys with or without PEFT's ".default" adapter name.
 */
export function loraPairs(tensors: Map<string, HostTensor>): Map<string, { A: HostTensor; B: HostTensor }> {
  const partial = new Map<string, { A?: HostTensor; B?: HostTensor }>();
  for (const [name, tensor] of tensors) {
    const match = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(name);
    if (!match) continue;
    const entry = partial.get(match[1]) ?? {};
    entry[match[2] as 'A' | 'B'] = tensor;
    partial.set(match[1], entry);
  }
  const pairs = new Map<string, { A: HostTensor; B: HostTensor }>();
  for (const [module, { A, B }] of partial) {
    if (!A || !B) throw new Error(`LoRA adapter: module ${module} lacks lora_${A ? 'B' : 'A'}`);
    pairs.set(module, { A, B });
  }
  return pairs;
}
