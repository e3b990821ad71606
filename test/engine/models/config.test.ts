import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LLAMA_FEATURES, parseHfConfig, eosTokenIds } from '../../../src/engine/models/config.ts';

// Abridged from meta-llama/Llama-3.2-1B-Instruct/config.json.
const llama32 = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.45.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

// Abridged from Qwen/Qwen2.5-0.5B-Instruct/config.json.
const qwen25 = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

// Abridged from mistralai/Mistral-7B-v0.1/config.json.
const mistral = {
  architectures: ['MistralForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 32000,
};

test('Llama 3.2 config with llama3 rope scaling', () => {
  const config = parseHfConfig(llama32);
  assert.deepEqual(config, {
    ...LLAMA_FEATURES,
    architecture: 'llama',
    vocabSize: 128256,
    hiddenSize: 2048,
    intermediateSize: 8192,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 64,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: {
      type: 'llama3',
      factor: 32,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    },
    tieWordEmbeddings: true,
    attentionBias: false,
    outputBias: false,
    mlpBias: false,
    maxPositionEmbeddings: 131072,
    slidingWindow: null,
    bosTokenId: 128000,
    eosTokenId: [128001, 128008, 128009],
    padTokenId: null,
    torchDtype: 'bfloat16',
  });
  assert.deepEqual(eosTokenIds(config), [128001, 128008, 128009]);
});

test('Qwen2 config has qkv bias, tied embeddings and no sliding window', () => {
  const config = parseHfConfig(qwen25);
  assert.equal(config.architecture, 'qwen2');
  assert.equal(config.attentionBias, true);
  assert.equal(config.outputBias, false);
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.headDim, 64);
  assert.equal(config.numKvHeads, 2);
  assert.equal(config.ropeScaling, null);
  assert.equal(config.ropeTheta, 1e6);
  assert.equal(config.slidingWindow, null);
  assert.deepEqual(eosTokenIds(config), [151645]);
});

test('Mistral config: untied, sliding window, derived head_dim', () => {
  const config = parseHfConfig(mistral);
  assert.equal(config.architecture, 'mistral');
  assert.equal(config.attentionBias, false);
  assert.equal(config.tieWordEmbeddings, false);
  assert.equal(config.headDim, 128);
  assert.equal(config.slidingWindow, 4096);
  assert.equal(config.eosTokenId, 2);
  assert.equal(config.bosTokenId, 1);
});

test('linear rope scaling and legacy "type" key', () => {
  const config = parseHfConfig({ ...mistral, architectures: ['LlamaForCausalLM'], rope_scaling: { type: 'linear', factor: 2 } });
  assert.deepEqual(config.ropeScaling, { type: 'linear', factor: 2 });
});

test('unsupported architectures and rope types are rejected clearly', () => {
  assert.throws(() => parseHfConfig({ ...mistral, architectures: ['GPT2LMHeadModel'] }), /Unsupported model architecture GPT2LMHeadModel/);
  assert.throws(() => parseHfConfig({ ...llama32, rope_scaling: { rope_type: 'yarn', factor: 4 } }), /rope_scaling type "yarn"/);
  assert.throws(() => parseHfConfig({ ...mistral, hidden_size: undefined }), /"hidden_size" is required/);
});
