// What is trainable: LoRA adapters over frozen base weights, or every base weight (full fine-tuning).

import type { ModelConfig } from '../models/config.ts';
import { llamaWeightShapes } from '../models/llama.ts';
import { initLora, loraAName, loraBName, loraTargets, type LoraSpec } from '../models/lora.ts';
import type { ModelSetup } from './step.ts';
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
  return { cfg, shapes, trainable, lora: { ...lora, targets }, packed: true };
}

/**
 * Splits base weights into frozen inputs and initial trainable tensors. Full fine-tuning trains
 * (and overwrites) the base arrays themselves; LoRA draws its A matrices from `seed`.
 */
export function initialTensors(
  setup: ModelSetup,
  base: Map<string, Float32Array>,
  seed: number,
): { frozen: Map<string, Float32Array>; params: Map<string, Float32Array> } {
  for (const [name, shape] of setup.shapes) {
    if (name.includes('.lora_')) continue;
    const w = base.get(name);
    if (!w) throw new Error(`base model has no ${name}`);
    if (w.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`${name}: expected shape [${shape}]`);
  }
  const known = new Set(setup.shapes.keys());
  const frozen = new Map([...base].filter(([n]) => known.has(n)));
  if (!setup.lora) return { frozen: new Map(), params: frozen };
  const lora = initLora(setup.lora.targets, setup.lora, SeededRandom.derive(seed, 'lora-init'));
  return { frozen, params: new Map([...lora].map(([n, t]) => [n, t.data])) };
}
