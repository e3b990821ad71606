// Merged and PEFT export on models/tiny-llama: the merged folder (base + adapter) gives the logits
// of the adapter applied over the base; dtype and sharding; a full fine-tune's folder re-exported;
// PEFT export round-trips the adapter; the ustar writer's archives unpack to the same files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { exportMerged, exportPeft, isPeftAdapterDir, tarDirectory } from '../../../src/engine/export/index.ts';
import { tarSize } from '../../../src/engine/export/tar.ts';
import { loadHfModel } from '../../../src/engine/io/hf-model.ts';
import { loadPeftAdapter } from '../../../src/engine/io/peft.ts';
import { SafetensorsFile } from '../../../src/engine/io/safetensors.ts';
import { loadModelForInference, chatPrompt } from '../../../src/engine/infer/model.ts';
import { SeededRandom } from '../../../src/engine/data/random.ts';
import { writeAdapter, maxAbsDiff } from '../infer/fixtures.ts';
import { readTar, extractTar } from './untar.ts';

const baseModelDir = new URL('../../../models/tiny-llama/', import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), 'tuneforge-export-'));
const adapterDir = join(work, 'adapter');
const cfg = loadHfModel(baseModelDir).config;
const rng = new SeededRandom(3);
writeAdapter(cfg, adapterDir, (_n, n) => new Float32Array(n).map(() => (rng.next() * 2 - 1) * 0.3), 9, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
const settings = { intraOpNumThreads: 1 };
test.after(() => rmSync(work, { recursive: true, force: true }));

async function logitsOf(source: Parameters<typeof loadModelForInference>[0], ids: number[]) {
  const model = await loadModelForInference(source, settings);
  try {
    return await model.nextTokenLogits(ids);
  } finally {
    await model.release();
  }
}

const prompt = [678, 1, 2, 3, 100, 200, 300, 679, 12, 678];

test('merged export equals the adapter over the base (f32, one file, tokenizer files)', async () => {
  const out = join(work, 'merged-f32');
  exportMerged(baseModelDir, adapterDir, out, 'f32');
  assert.deepEqual(readdirSync(out).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
  assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'float32');
  const merged = await logitsOf({ baseModelDir: out }, prompt);
  const overBase = await logitsOf({ baseModelDir, adapterDir }, prompt);
  const base = await logitsOf({ baseModelDir }, prompt);
  assert.ok(maxAbsDiff(merged, overBase) < 1e-5, `merged vs adapter: ${maxAbsDiff(merged, overBase)}`);
  assert.ok(maxAbsDiff(merged, base) > 1e-2, 'the adapter changes the model');
  // Same chat prompt ids through the exported tokenizer.
  const model = await loadModelForInference({ baseModelDir: out }, settings);
  const ref = await loadModelForInference({ baseModelDir }, settings);
  const messages = [{ role: 'user' as const, content: 'Ahoy?' }];
  assert.deepEqual(chatPrompt(model, messages), chatPrompt(ref, messages));
  await model.release();
  await ref.release();
});

test('merged export in f16 and bf16, sharded past maxShardBytes', async () => {
  const out = join(work, 'merged-f16-sharded');
  exportMerged(baseModelDir, adapterDir, out, 'f16', { maxShardBytes: 600_000 });
  const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8'));
  const shards = new Set(Object.values(index.weight_map as Record<string, string>));
  assert.ok(shards.size > 1, `${shards.size} shards`);
  for (const shard of shards) {
    const file = SafetensorsFile.open(join(out, shard));
    for (const info of file.tensors.values()) assert.equal(info.dtype, 'F16');
    file.close();
  }
  assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'float16');
  const merged = await logitsOf({ baseModelDir: out }, prompt);
  const overBase = await logitsOf({ baseModelDir, adapterDir }, prompt);
  assert.ok(maxAbsDiff(merged, overBase) < 2e-2, `f16 merged vs adapter: ${maxAbsDiff(merged, overBase)}`);

  const bf16 = join(work, 'merged-bf16');
  exportMerged(baseModelDir, adapterDir, bf16, 'bf16');
  assert.equal(SafetensorsFile.open(join(bf16, 'model.safetensors')).info('lm_head.weight').dtype, 'BF16');
});

test('a full fine-tune folder (no adapter) re-exports to the same weights', async () => {
  const full = join(work, 'merged-f32');
  const out = join(work, 'refull');
  exportMerged(full, null, out, 'f32');
  const a = loadHfModel(full).weights;
  const b = loadHfModel(out).weights;
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const [name, t] of a) assert.deepEqual(b.get(name)!.data, t.data, name);
});

test('merged export without generation_config/special_tokens_map writes them from config.json', () => {
  const src = join(work, 'bare');
  mkdirSync(src);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) writeFileSync(join(src, f), readFileSync(join(baseModelDir, f)));
  const out = join(work, 'bare-out');
  exportMerged(src, null, out, 'f32');
  assert.deepEqual(JSON.parse(readFileSync(join(out, 'generation_config.json'), 'utf8')), { bos_token_id: 677, eos_token_id: 679, pad_token_id: 677 });
  const special = JSON.parse(readFileSync(join(out, 'special_tokens_map.json'), 'utf8'));
  assert.equal(special.eos_token, '<|im_end|>');
  assert.equal(special.pad_token, '<|endoftext|>');
});

test('PEFT export round-trips the adapter, with the base model named', () => {
  const out = join(work, 'peft');
  exportPeft(adapterDir, out, { baseModelName: 'tiny-llama' });
  assert.ok(isPeftAdapterDir(out));
  const a = loadPeftAdapter(adapterDir);
  const b = loadPeftAdapter(out);
  assert.equal(b.settings.baseModelName, 'tiny-llama');
  assert.deepEqual({ ...b.settings, baseModelName: '' }, { ...a.settings, baseModelName: '' });
  assert.deepEqual([...b.tensors.keys()], [...a.tensors.keys()]);
  for (const [k, t] of a.tensors) assert.deepEqual(b.tensors.get(k), t);
  assert.throws(() => exportPeft(baseModelDir, join(work, 'nope')), /not a PEFT adapter/);
  assert.ok(!existsSync(join(work, 'nope')));
});

test('ustar archive of a folder unpacks to the same files (our reader and tar(1))', async () => {
  const dir = join(work, 'peft');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  const longName = 'n'.repeat(90) + '.txt';
  writeFileSync(join(dir, 'sub', longName), 'x'.repeat(513));
  const archive = await buffer(tarDirectory(dir, { prefix: 'ft-model-peft' }));
  assert.equal(archive.length, tarSize(dir, { prefix: 'ft-model-peft' }));
  assert.equal(archive.length % 512, 0);
  const entries = readTar(archive);
  assert.deepEqual(entries.map((e) => e.path), ['ft-model-peft/', 'ft-model-peft/adapter_config.json', 'ft-model-peft/adapter_model.safetensors', `ft-model-peft/sub/${longName}`]);
  const unpacked = join(work, 'unpacked');
  extractTar(archive, unpacked);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', `sub/${longName}`]) {
    assert.deepEqual(readFileSync(join(unpacked, 'ft-model-peft', f)), readFileSync(join(dir, f)), f);
  }
  let tarBin = true;
  try {
    execFileSync('tar', ['--version'], { stdio: 'ignore' });
  } catch {
    tarBin = false;
  }
  if (tarBin) {
    const archivePath = join(work, 'a.tar');
    writeFileSync(archivePath, archive);
    const listed = execFileSync('tar', ['-tf', archivePath], { encoding: 'utf8' }).trim().split('\n');
    assert.deepEqual(listed, entries.map((e) => e.path));
  }
});
