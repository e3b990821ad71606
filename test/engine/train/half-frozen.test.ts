// Frozen weights in their checkpoint's 2-byte format (bf16/f16 bits, widened inside the step graph
// where read): a LoRA step must be the f32 step on the same (rounded) values, and loading a bf16
// checkpoint for LoRA must keep 2 bytes a value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompiledGraph } from '../../../src/engine/runtime/session.ts';
import { buildStepGraph, halfFrozen, names, type ModelSetup } from '../../../src/engine/train/step.ts';
import { initialTensors, loadBaseModel, modelSetup, withStoredFrozen } from '../../../src/engine/train/setup.ts';
import { estimateStep, graphCost } from '../../../src/engine/train/memory-estimate.ts';
import { reachableNodes } from '../../../src/engine/graph/onnx.ts';
import { decodeToF32, encodeFromF32, type HalfDtype } from '../../../src/engine/io/safetensors.ts';
import { saveHfModel } from '../../../src/engine/io/hf-model.ts';
import { ALL_LINEAR, type LoraSpec } from '../../../src/engine/models/lora.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { randomWeights, tinyConfig } from '../models/llama-fixtures.ts';
import { memorisationBatch, SEQS } from './fixtures.ts';

const SEQ = 8;
const lora: LoraSpec = { rank: 4, alpha: 8, dropout: 0, targetModules: ALL_LINEAR };

/** Bits of `dtype` for each value, and the f32 values those bits hold. */
function rounded(values: Float32Array, dtype: HalfDtype): { bits: Uint16Array; widened: Float32Array } {
  const bytes = encodeFromF32(values, dtype);
  return { bits: new Uint16Array(bytes.buffer), widened: decodeToF32(bytes, dtype) };
}

/** Loss and every gradient of one LoRA step, its frozen weights fed as given. */
async function lossAndGradients(setup: ModelSetup, frozen: Map<string, Float32Array | Uint16Array>, params: Map<string, Float32Array>) {
  const shape = { rows: SEQS.length, seqLen: SEQ };
  const session = await CompiledGraph.compile(buildStepGraph({ ...setup, packed: false }, shape, 'gradient'), { intraOpNumThreads: 1 });
  for (const [n, w] of frozen) session.setResident(n, w);
  const batch = memorisationBatch(SEQS, SEQ);
  const out = await session.run({
    input_ids: batch.inputIds, position_ids: batch.positionIds, segment_ids: batch.segmentIds,
    labels: batch.labels, loss_weights: batch.lossWeights, inv_total_weight: Float32Array.of(0.05), ...Object.fromEntries(params),
  });
  await session.release();
  return out as Record<string, Float32Array>;
}

for (const [dtype, cfg] of [
  ['BF16', tinyConfig({ attentionBias: true })],
  ['F16', tinyConfig({ tieWordEmbeddings: false, qkNorm: true })],
] as [HalfDtype, ModelConfig][]) {
  for (const recompute of [0, cfg.numLayers]) {
    test(`a LoRA step on ${dtype} frozen weights is the f32 step on the same values (${recompute} layers recomputed, ${cfg.tieWordEmbeddings ? 'tied' : 'untied'} head)`, async () => {
      const plain = { ...modelSetup(cfg, lora), recompute };
      const half = { ...plain, frozenDtype: dtype };
      const names16 = halfFrozen(half);
      assert.ok(names16.size > 0 && !names16.has(cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'));
      const asF32 = new Map<string, Float32Array>();
      const asBits = new Map<string, Float32Array | Uint16Array>();
      for (const [n, w] of randomWeights(cfg, 11, false) as Map<string, Float32Array>) {
        const { bits, widened } = rounded(w, dtype);
        asF32.set(n, widened);
        asBits.set(n, names16.has(n) ? bits : widened);
      }
      const reference = initialTensors(plain, asF32, 5);
      const narrow = initialTensors(half, asBits, 5);
      // Non-zero B, so every adapter's gradient is non-zero.
      for (const params of [reference.params, narrow.params]) for (const [n, p] of params) if (n.includes('lora_B')) p.forEach((_, i) => (p[i] = Math.sin(i + n.length) * 0.1));
      assert.ok([...narrow.frozen].some(([, w]) => w instanceof Uint16Array));

      const want = await lossAndGradients(plain, reference.frozen, reference.params);
      const got = await lossAndGradients(half, narrow.frozen, narrow.params);
      assert.ok(Math.abs(got.loss_sum[0] - want.loss_sum[0]) <= 1e-6 * Math.abs(want.loss_sum[0]), `loss ${got.loss_sum[0]} vs ${want.loss_sum[0]}`);
      for (const n of plain.trainable) {
        const [g, r] = [got[names.grad(n)], want[names.grad(n)]];
        const scale = Math.max(...r.map(Math.abs));
        assert.ok(scale > 0, `${n} has a zero gradient`);
        const worst = Math.max(...g.map((x, i) => Math.abs(x - r[i])));
        assert.ok(worst <= 1e-5 * scale, `${n}: gradients differ by ${worst} (scale ${scale})`);
      }
    });
  }
}

test('a bf16 checkpoint trained with LoRA keeps its frozen weights at 2 bytes a value; f32 and full fine-tuning widen them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'half-frozen-'));
  try {
    const cfg = tinyConfig({ tieWordEmbeddings: false });
    const raw = { architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, max_position_embeddings: 128 };
    const weights = new Map([...(randomWeights(cfg, 3, false) as Map<string, Float32Array>)].map(([n, data]) => [n, { shape: modelSetup(cfg, null).shapes.get(n)!, data }]));
    saveHfModel(join(dir, 'bf16'), raw, weights, 'BF16');
    saveHfModel(join(dir, 'f32'), raw, weights, 'F32');

    const setup = withStoredFrozen(modelSetup(cfg, lora), join(dir, 'bf16'));
    assert.equal(setup.frozenDtype, 'BF16');
    const { base } = await loadBaseModel(join(dir, 'bf16'), setup);
    const { frozen } = initialTensors(setup, base, 1);
    let frozenBytes = 0;
    for (const [n, w] of frozen) {
      assert.equal(w instanceof Uint16Array, n !== 'lm_head.weight', `${n} is a ${w.constructor.name}`);
      frozenBytes += w.byteLength;
    }
    const values = [...frozen.values()].reduce((s, w) => s + w.length, 0);
    assert.equal(frozenBytes, 2 * values + 2 * 32 * 16); // all 2 bytes a value but the f32 LM head
    assert.equal(estimateStep(setup, { rows: 1, seqLen: SEQ }, 1).frozenBytes, frozenBytes);

    assert.equal(withStoredFrozen(modelSetup(cfg, lora), join(dir, 'f32')).frozenDtype, undefined);
    assert.equal(withStoredFrozen(modelSetup(cfg, null), join(dir, 'bf16')).frozenDtype, undefined);
    const full = initialTensors(modelSetup(cfg, null), (await loadBaseModel(join(dir, 'bf16'), modelSetup(cfg, null))).base, 1);
    assert.ok([...full.params.values()].every((w) => w instanceof Float32Array));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('widened weights live only around their use: at the step\'s peak, in ORT\'s order, at most one widened matrix is in use', () => {
  const cfg = tinyConfig({ numLayers: 4, hiddenSize: 64, intermediateSize: 128, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 64 });
  for (const recompute of [0, cfg.numLayers]) {
    const setup = { ...modelSetup(cfg, lora), recompute, frozenDtype: 'BF16' as const };
    const graph = buildStepGraph(setup, { rows: 2, seqLen: 64 }, 'gradient');
    const built = reachableNodes(graph);
    // Idle buffers (kept by ORT's planner for the next tensor of their size) are one per size, not per layer.
    const widened = graphCost(graph).atPeak.filter((t) => {
      const node = built[t.node];
      if (t.idle) return false;
      return node.opType === 'Gather' && node.inputs[1]?.dtype === 'int32' && node.outputs[0].rank === 2;
    });
    assert.ok(widened.length <= 1, `${recompute} layers recomputed: ${widened.length} widened matrices in use at the peak`);
  }
});
