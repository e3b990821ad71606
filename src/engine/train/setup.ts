// What is trainable: LoRA adapters over frozen base weights, or every base weight (full fine-tuning).

import type { TrainSpec } from '../contract.ts';
import type { ModelConfig } from '../models/config.ts';
import { llamaWeightShapes } from '../models/llama.ts';
import { initLora, loraAName, loraBName, loraTargets, moduleName, type LoraSpec } from '../models/lora.ts';
import { mergeLoraAdapter } from '../infer/model.ts';
import { loadPeftAdapter, loraPairs } from '../io/peft.ts';
import { halfFrozen, type ModelSetup } from './step.ts';
import type { FrozenValues } from './runner.ts';
import { loadHfModelAsync, storedDtypes, type HfModel } from '../io/hf-model.ts';
import { SeededRandom } from '../data/random.ts';

export function modelSetup(cfg: ModelConfig, lora: LoraSpec | null): ModelSetup {
  const shapes = llamaWeightShapes(cfg);
  if (!lora) return { cfg, shapes, trainable: [...shapes.keys()], lora: null };
  const targets = loraTargets(cfg, lora);
  const trainable: string[] = [];
  for (const t of targets) {
    shapes.set(loraAName(t.path), [lora.rank, t.inFeatures]);
    shapes.set(loraBName(t.path), [t.outFeatures, lora.rank]);
    trainable.push(loraAName(t.path), loraBName(t.path));
  }
  // The adapter names the modules it adapts (Phi-3: qkv_proj for q_proj…), as PEFT loads it.
  const targetModules = [...new Set(targets.map(moduleName))];
  return { cfg, shapes, trainable, lora: { ...lora, targetModules, targets }, packed: true };
}

/**
 * The setup with its frozen weights kept in the checkpoint's 2-byte format (frozenDtype) when every
 * one of them is stored in the same one (bf16 or f16); otherwise they are widened to f32 on load.
 * Trainable tensors (LoRA adapters, full fine-tuning's weights) are f32 master weights either way.
 */
export function withStoredFrozen(setup: ModelSetup, modelDir: string): ModelSetup {
  const half = halfFrozen({ ...setup, frozenDtype: 'BF16' });
  if (half.size === 0) return setup;
  const dtypes = storedDtypes(modelDir);
  const stored = new Set([...half].map((n) => dtypes.get(n)));
  const [only] = stored;
  return stored.size === 1 && (only === 'BF16' || only === 'F16') ? { ...setup, frozenDtype: only } : setup;
}

/**
 * The base model for `setup`: its frozen weights as stored under setup.frozenDtype (bits), the rest
 * f32. Read on libuv's threads (loadHfModelAsync): the caller's thread is free until they are in.
 */
export async function loadBaseModel(modelDir: string, setup: ModelSetup): Promise<{ model: HfModel; base: Map<string, FrozenValues> }> {
  const model = await loadHfModelAsync(modelDir, { keepHalf: halfFrozen(setup) });
  const base = new Map<string, FrozenValues>([...model.weights].map(([n, t]) => [n, t.data]));
  for (const [n, t] of model.halfWeights) {
    if (t.dtype !== setup.frozenDtype) throw new Error(`${modelDir}: ${n} is ${t.dtype}, not ${setup.frozenDtype}`);
    base.set(n, t.bits);
  }
  model.weights.clear();
  model.halfWeights.clear();
  return { model, base };
}

/**
 * Splits base weights into frozen inputs and initial trainable tensors. Full fine-tuning trains
 * (and overwrites) the base arrays themselves; LoRA draws its A matrices from `seed`.
 */
export function initialTensors<T extends FrozenValues>(
  setup: ModelSetup,
  base: Map<string, T>,
  seed: number,
): { frozen: Map<string, T>; params: Map<string, Float32Array> } {
  for (const [name, shape] of setup.shapes) {
    if (name.includes('.lora_')) continue;
    const w = base.get(name);
    if (!w) throw new Error(`base model has no ${name}`);
    if (w.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`${name}: expected shape [${shape}]`);
  }
  const known = new Set(setup.shapes.keys());
  const frozen = new Map([...base].filter(([n]) => known.has(n)));
  if (!setup.lora) {
    const params = new Map<string, Float32Array>();
    for (const [n, w] of frozen) {
      if (!(w instanceof Float32Array)) throw new Error(`${n}: trainable weights are f32 (master weights), not 2-byte bits`);
      params.set(n, w);
    }
    return { frozen: new Map(), params };
  }
  const lora = initLora(setup.lora.targets, setup.lora, SeededRandom.derive(seed, 'lora-init'));
  return { frozen, params: new Map([...lora].map(([n, t]) => [n, t.data])) };
}

/**
 * initialTensors for a job, which may start from an adapter (spec.initialAdapterDir, a LoRA
 * fine-tune tuned again): LoRA continues its A and B, which must have the job's rank, alpha and
 * target modules; full fine-tuning trains the base weights with the adapter merged in.
 */
export function startingTensors<T extends FrozenValues>(
  spec: TrainSpec,
  setup: ModelSetup,
  base: Map<string, T>,
): { frozen: Map<string, T>; params: Map<string, Float32Array> } {
  const adapterDir = spec.initialAdapterDir;
  if (adapterDir && !setup.lora) {
    const f32 = [...base].filter((e): e is [string, T & Float32Array] => e[1] instanceof Float32Array);
    const views = new Map(f32.map(([name, data]) => [name, { shape: setup.shapes.get(name) ?? [data.length], data }]));
    mergeLoraAdapter(views, adapterDir); // in place: the views share base's arrays
  }
  const tensors = initialTensors(setup, base, spec.seed);
  if (!adapterDir || !setup.lora) return tensors;

  const { settings, tensors: stored } = loadPeftAdapter(adapterDir);
  const { rank, alpha, targets } = setup.lora;
  if (settings.rank !== rank || settings.alpha !== alpha) {
    throw new Error(`${adapterDir}: the adapter has rank ${settings.rank} and alpha ${settings.alpha}; this job trains rank ${rank}, alpha ${alpha}`);
  }
  const pairs = loraPairs(stored);
  const wanted = new Set(targets.map((t) => t.path));
  const extra = [...pairs.keys()].filter((m) => !wanted.has(m));
  if (extra.length) throw new Error(`${adapterDir}: the adapter adapts ${extra[0]}, which this job does not train`);
  for (const t of targets) {
    const pair = pairs.get(t.path);
    if (!pair) throw new Error(`${adapterDir}: the adapter has no ${t.path}, which this job trains`);
    for (const [name, stored] of [[loraAName(t.path), pair.A], [loraBName(t.path), pair.B]] as const) {
      const param = tensors.params.get(name)!;
      if (stored.data.length !== param.length) throw new Error(`${adapterDir}: ${name} has shape [${stored.shape}], expected [${setup.shapes.get(name)}]`);
      param.set(stored.data);
    }
  }
  return tensors;
}
