import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPeftAdapter, loraKey, loraPairs, savePeftAdapter } from '../../../src/engine/io/peft.ts';
import { SafetensorsFile, type HostTensor } from '../../../src/engine/io/safetensors.ts';

test('PEFT adapter round-trip with PEFT key names, shapes and config', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tuneforge-peft-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const rank = 4, hidden = 8, kvOut = 4;
  const tensors = new Map<string, HostTensor>();
  for (let layer = 0; layer < 2; layer++) {
    tensors.set(`model.layers.${layer}.self_attn.q_proj.lora_A.weight`, { shape: [rank, hidden], data: new Float32Array(rank * hidden).map((_, i) => i / 10 + layer) });
    tensors.set(`model.layers.${layer}.self_attn.q_proj.lora_B.weight`, { shape: [hidden, rank], data: new Float32Array(hidden * rank).fill(0.5) });
    tensors.set(`base_model.model.model.layers.${layer}.self_attn.v_proj.lora_A.weight`, { shape: [rank, hidden], data: new Float32Array(rank * hidden).fill(-1) });
    tensors.set(`base_model.model.model.layers.${layer}.self_attn.v_proj.lora_B.weight`, { shape: [kvOut, rank], data: new Float32Array(kvOut * rank).fill(2) });
  }
  savePeftAdapter(dir, { baseModelName: 'tiny-llama', rank, alpha: 8, dropout: 0.05, targetModules: ['v_proj', 'q_proj'] }, tensors);

  const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(config.peft_type, 'LORA');
  assert.equal(config.task_type, 'CAUSAL_LM');
  assert.equal(config.r, 4);
  assert.equal(config.lora_alpha, 8);
  assert.equal(config.lora_dropout, 0.05);
  assert.equal(config.base_model_name_or_path, 'tiny-llama');
  assert.deepEqual(config.target_modules, ['q_proj', 'v_proj']);

  const file = SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  assert.deepEqual(file.metadata, { format: 'pt' });
  const keys = [...file.tensors.keys()].sort();
  file.close();
  assert.deepEqual(keys, [
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
    'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight',
    'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight',
    'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight',
    'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight',
  ]);
  assert.equal(loraKey('model.layers.1.self_attn.q_proj', 'B'), 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight');

  const adapter = loadPeftAdapter(dir);
  assert.deepEqual(adapter.settings, { baseModelName: 'tiny-llama', rank: 4, alpha: 8, dropout: 0.05, targetModules: ['q_proj', 'v_proj'] });
  const qA = adapter.tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')!;
  assert.deepEqual(qA.shape, [rank, hidden]);
  assert.deepEqual(qA.data, tensors.get('model.layers.1.self_attn.q_proj.lora_A.weight')!.data);
  const vB = adapter.tensors.get('base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight')!;
  assert.deepEqual(vB.shape, [kvOut, rank]);

  const pairs = loraPairs(adapter.tensors);
  assert.equal(pairs.size, 4);
  assert.deepEqual(pairs.get('model.layers.0.self_attn.v_proj')!.B.shape, [kvOut, rank]);
});
