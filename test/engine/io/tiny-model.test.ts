import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { loadTokenizer } from '../../../src/engine/data/tokenizer.ts';
import { makeTinyModel } from '../../../scripts/make-tiny-model.ts';

const MODEL_DIR = join(import.meta.dirname, '..', '..', '..', 'models', 'tiny-llama');

test('the bundled tiny model loads: config, every Llama weight with the right shape, tokenizer', () => {
  const { config, weights } = loadHfModel(MODEL_DIR);
  assert.equal(config.architecture, 'llama');
  const { hiddenSize: h, intermediateSize: m, numHeads, numKvHeads, headDim, vocabSize } = config;
  assert.equal(numHeads * headDim, h);
  const expected: Record<string, number[]> = {
    'model.embed_tokens.weight': [vocabSize, h],
    'model.norm.weight': [h],
    'lm_head.weight': [vocabSize, h],
  };
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    Object.assign(expected, {
      [`${p}.input_layernorm.weight`]: [h],
      [`${p}.post_attention_layernorm.weight`]: [h],
      [`${p}.self_attn.q_proj.weight`]: [numHeads * headDim, h],
      [`${p}.self_attn.k_proj.weight`]: [numKvHeads * headDim, h],
      [`${p}.self_attn.v_proj.weight`]: [numKvHeads * headDim, h],
      [`${p}.self_attn.o_proj.weight`]: [h, numHeads * headDim],
      [`${p}.mlp.gate_proj.weight`]: [m, h],
      [`${p}.mlp.up_proj.weight`]: [m, h],
      [`${p}.mlp.down_proj.weight`]: [h, m],
    });
  }
  assert.deepEqual(Object.fromEntries([...weights].map(([name, t]) => [name, t.shape])), expected);
  const tokenizer = loadTokenizer(MODEL_DIR);
  assert.ok(tokenizer.vocabSize <= vocabSize);
  assert.equal(config.eosTokenId, tokenizer.eosTokenId);
  assert.ok(tokenizer.chatTemplate?.includes('<|im_start|>'));
});

test('make:tiny-model reproduces the committed files byte for byte', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-tiny-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  makeTinyModel(dir);
  for (const file of readdirSync(dir)) {
    assert.ok(readFileSync(join(dir, file)).equals(readFileSync(join(MODEL_DIR, file))), `${file} differs`);
  }
});
