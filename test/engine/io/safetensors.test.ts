import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SafetensorsFile,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  bf16BitsToF32,
  readSafetensors,
  writeSafetensors,
  type HostTensor,
} from '../../../src/engine/io/safetensors.ts';
import { loadHfModel, loadHfModelAsync, saveHfModel, INDEX_FILE } from '../../../src/engine/io/hf-model.ts';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-st-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function seq(n: number, scale = 0.37): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * 1.7) * scale * (i + 1);
  return a;
}

test('f16 conversion is exact on representable values and rounds to nearest even', () => {
  for (const v of [0, -0, 1, -2, 0.5, 65504, -65504, 6.103515625e-5, 5.960464477539063e-8, 0.333251953125]) {
    assert.equal(f16BitsToF32(f32ToF16Bits(v)), v);
  }
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(65520), 0x7c00); // rounds up to infinity
  assert.equal(f32ToF16Bits(1e-9), 0);
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 2 ** -11)), 1);
  assert.equal(f16BitsToF32(f32ToF16Bits(1 + 3 * 2 ** -11)), 1 + 2 * 2 ** -10);
  // Exhaustive: every finite f16 bit pattern survives f16 → f32 → f16.
  for (let bits = 0; bits < 0x10000; bits++) {
    if ((bits & 0x7c00) === 0x7c00 && bits & 0x3ff) continue; // NaN payloads
    assert.equal(f32ToF16Bits(f16BitsToF32(bits)), bits);
  }
});

test('bf16 conversion rounds to nearest even', () => {
  assert.equal(f32ToBf16Bits(1), 0x3f80);
  assert.equal(bf16BitsToF32(0x3f80), 1);
  assert.equal(bf16BitsToF32(f32ToBf16Bits(1 + 2 ** -8)), 1); // tie → even
  assert.equal(bf16BitsToF32(f32ToBf16Bits(1 + 3 * 2 ** -8)), 1 + 2 ** -6);
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
});

for (const dtype of ['F32', 'F16', 'BF16'] as const) {
  test(`safetensors round-trip in ${dtype}`, (t) => {
    const dir = tempDir(t);
    const tensors = new Map<string, HostTensor>([
      ['a.weight', { shape: [3, 5], data: seq(15) }],
      ['b.bias', { shape: [7], data: seq(7, 0.01) }],
      ['scalar', { shape: [], data: new Float32Array([2.5]) }],
    ]);
    const path = join(dir, 'x.safetensors');
    writeSafetensors(path, tensors, { dtype, metadata: { format: 'pt' } });

    const bytes = readFileSync(path);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    assert.equal(headerLength % 8, 0, 'data section starts 8-byte aligned');
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
    assert.deepEqual(header.__metadata__, { format: 'pt' });
    assert.equal(header['a.weight'].dtype, dtype);
    assert.deepEqual(header['a.weight'].shape, [3, 5]);

    const { tensors: back, metadata } = readSafetensors(path);
    assert.deepEqual(metadata, { format: 'pt' });
    assert.deepEqual([...back.keys()], ['a.weight', 'b.bias', 'scalar']);
    const tolerance = dtype === 'F32' ? 0 : dtype === 'F16' ? 2 ** -11 : 2 ** -8;
    for (const [name, original] of tensors) {
      const got = back.get(name)!;
      assert.deepEqual(got.shape, original.shape);
      for (let i = 0; i < original.data.length; i++) {
        const relative = Math.abs(got.data[i] - original.data[i]) / Math.max(Math.abs(original.data[i]), 1e-6);
        assert.ok(relative <= tolerance, `${name}[${i}]: ${got.data[i]} vs ${original.data[i]}`);
      }
    }
  });
}

test('lazy reads: header first, one tensor at a time; corrupt files rejected', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'y.safetensors');
  writeSafetensors(path, new Map([['w', { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }]]), { dtype: 'BF16' });
  const file = SafetensorsFile.open(path);
  assert.deepEqual(file.info('w'), { dtype: 'BF16', shape: [2, 2], dataOffsets: [0, 8] });
  assert.deepEqual([...file.read('w').data], [1, 2, 3, 4]);
  assert.throws(() => file.read('missing'), /no tensor named missing/);
  file.close();
  assert.throws(() => writeSafetensors(path, new Map([['w', { shape: [3], data: new Float32Array(2) }]])), /shape \[3\] but 2 values/);
});

test('HF folder: single file and sharded index load the same weights', (t) => {
  const dir = tempDir(t);
  const rawConfig = {
    architectures: ['LlamaForCausalLM'], hidden_size: 8, intermediate_size: 16, num_attention_heads: 2,
    num_key_value_heads: 1, num_hidden_layers: 1, vocab_size: 11, rms_norm_eps: 1e-5, bos_token_id: 1, eos_token_id: 2,
  };
  const weights = new Map<string, HostTensor>([
    ['model.embed_tokens.weight', { shape: [11, 8], data: seq(88) }],
    ['model.layers.0.self_attn.q_proj.weight', { shape: [8, 8], data: seq(64, 0.1) }],
    ['model.layers.0.mlp.up_proj.weight', { shape: [16, 8], data: seq(128, 0.2) }],
    ['model.norm.weight', { shape: [8], data: seq(8, 1) }],
  ]);
  const single = join(dir, 'single');
  saveHfModel(single, rawConfig, weights, 'F32');
  assert.deepEqual(readdirSync(single).sort(), ['config.json', 'model.safetensors']);

  const sharded = join(dir, 'sharded');
  saveHfModel(sharded, rawConfig, weights, 'BF16', { maxShardBytes: 300 });
  const files = readdirSync(sharded).sort();
  assert.ok(files.includes(INDEX_FILE));
  assert.ok(files.includes('model-00001-of-00003.safetensors'), files.join(','));
  const index = JSON.parse(readFileSync(join(sharded, INDEX_FILE), 'utf8'));
  assert.equal(index.metadata.total_size, (88 + 64 + 128 + 8) * 2);
  assert.equal(index.weight_map['model.norm.weight'], 'model-00003-of-00003.safetensors');
  assert.equal(JSON.parse(readFileSync(join(sharded, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');

  const a = loadHfModel(single);
  const b = loadHfModel(sharded);
  assert.equal(a.config.vocabSize, 11);
  assert.deepEqual([...a.weights.keys()].sort(), [...weights.keys()].sort());
  assert.deepEqual([...b.weights.keys()].sort(), [...weights.keys()].sort());
  for (const [name, original] of weights) {
    assert.deepEqual(a.weights.get(name)!.data, original.data);
    const bf = b.weights.get(name)!.data;
    for (let i = 0; i < bf.length; i++) assert.ok(Math.abs(bf[i] - original.data[i]) <= Math.abs(original.data[i]) * 2 ** -8);
  }
  const filtered = loadHfModel(single, { filter: (n) => n.includes('norm') });
  assert.deepEqual([...filtered.weights.keys()], ['model.norm.weight']);
});

test('HF folder read on libuv threads: the same tensors, in the same order, as the synchronous load', async (t) => {
  const dir = tempDir(t);
  const rawConfig = { architectures: ['LlamaForCausalLM'], hidden_size: 8, intermediate_size: 16, num_attention_heads: 2, num_key_value_heads: 1, num_hidden_layers: 1, vocab_size: 11, rms_norm_eps: 1e-5 };
  const weights = new Map<string, HostTensor>([
    ['model.embed_tokens.weight', { shape: [11, 8], data: seq(88) }],
    ['model.layers.0.mlp.up_proj.weight', { shape: [16, 8], data: seq(128, 0.2) }],
    ['model.norm.weight', { shape: [8], data: seq(8, 1) }],
  ]);
  saveHfModel(dir, rawConfig, weights, 'BF16', { maxShardBytes: 300 });
  const options = { keepHalf: new Set(['model.layers.0.mlp.up_proj.weight']), filter: (n: string) => n !== 'model.norm.weight' };
  const sync = loadHfModel(dir, options);
  const loaded = await loadHfModelAsync(dir, options);
  assert.deepEqual(loaded.config, sync.config);
  assert.deepEqual([...loaded.weights.keys()], ['model.embed_tokens.weight']);
  assert.deepEqual(loaded.weights.get('model.embed_tokens.weight'), sync.weights.get('model.embed_tokens.weight'));
  const half = loaded.halfWeights.get('model.layers.0.mlp.up_proj.weight')!;
  assert.equal(half.dtype, 'BF16');
  assert.deepEqual(half, sync.halfWeights.get('model.layers.0.mlp.up_proj.weight'));

  // A truncated last shard fails the load once the earlier shards' reads, already started, are over.
  const shard = join(dir, readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().at(-1)!);
  const bytes = readFileSync(shard);
  writeFileSync(shard, bytes.subarray(0, bytes.length - 10));
  await assert.rejects(loadHfModelAsync(dir), /inconsistent offsets/);
});
