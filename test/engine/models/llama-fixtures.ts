// Tiny configs and random weights for model tests (no files needed).
import { LLAMA_FEATURES, type ModelConfig } from '../../../src/engine/models/config.ts';
import { llamaWeightShapes } from '../../../src/engine/models/llama.ts';
import { rng } from '../graph/gradcheck.ts';

export function tinyConfig(over: Partial<ModelConfig> = {}): ModelConfig {
  return {
    ...LLAMA_FEATURES,
    architecture: 'llama', vocabSize: 32, hiddenSize: 16, intermediateSize: 24, numLayers: 2,
    numHeads: 4, numKvHeads: 2, headDim: 4, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null,
    tieWordEmbeddings: true, attentionBias: false, outputBias: false, mlpBias: false,
    maxPositionEmbeddings: 128, slidingWindow: null, bosTokenId: 1, eosTokenId: 2, padTokenId: 0,
    torchDtype: 'float32', ...over,
  };
}

/** Random weights (norm weights near 1), as f64 or f32 arrays. */
export function randomWeights(cfg: ModelConfig, seed = 7, f64 = true): Map<string, Float64Array | Float32Array> {
  const r = rng(seed);
  const out = new Map<string, Float64Array | Float32Array>();
  for (const [name, shape] of llamaWeightShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = f64 ? new Float64Array(n) : new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    for (let i = 0; i < n; i++) a[i] = isNorm ? 1 + (r() - 0.5) * 0.2 : (r() * 2 - 1) * 0.3;
    out.set(name, a);
  }
  return out;
}
