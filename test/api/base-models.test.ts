// Base models are the MODELS_DIR folders the engine can train: /v1/models lists only those, and a job
// on any other folder is refused when it is created (400 naming `model`), through the official SDK.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { after, before, describe, it } from 'node:test';
import { BASE_MODEL, TINY_CONFIG, chatJsonl, startTestServer, type TestServer } from '../support/server.ts';

const tiny = JSON.parse(fs.readFileSync(TINY_CONFIG, 'utf8'));

/** Folders of MODELS_DIR that are not models the engine can train, each with its config.json (null: none). */
const NOT_TRAINABLE: Record<string, string | null> = {
  bert: JSON.stringify({ architectures: ['BertModel'], model_type: 'bert', hidden_size: 128, num_attention_heads: 4, num_hidden_layers: 2, vocab_size: 704 }),
  'gemma-3-vision': JSON.stringify({ architectures: ['Gemma3ForConditionalGeneration'], model_type: 'gemma3', text_config: { hidden_size: 128 }, vision_config: {} }),
  'broken-json': '{"architectures": ["LlamaForCausalLM"], ',
  'llama-without-sizes': JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama' }),
  'no-config': null,
};

describe('base models: only what the engine can train', () => {
  let server: TestServer;
  let client: OpenAI;
  let trainingFile: string;
  before(async () => {
    server = await startTestServer();
    for (const [name, config] of Object.entries(NOT_TRAINABLE)) {
      const dir = path.join(server.modelsDir, name);
      fs.mkdirSync(dir, { recursive: true });
      if (config === null) fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
      else fs.writeFileSync(path.join(dir, 'config.json'), config);
    }
    // A second trainable folder: the same tiny Llama, declared by model_type only.
    fs.mkdirSync(path.join(server.modelsDir, 'by-model-type'));
    const { architectures: _, ...byModelType } = tiny;
    fs.writeFileSync(path.join(server.modelsDir, 'by-model-type', 'config.json'), JSON.stringify(byModelType));
    client = server.client();
    trainingFile = (await client.files.create({ file: new File([chatJsonl(10)], 'train.jsonl'), purpose: 'fine-tune' })).id;
  });
  after(() => server.close());

  it('lists the trainable folders and nothing else', async () => {
    const ids = (await client.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids.sort(), ['by-model-type', BASE_MODEL].sort());
    for (const name of Object.keys(NOT_TRAINABLE)) {
      await assert.rejects(client.models.retrieve(name), (err: unknown) => err instanceof OpenAI.NotFoundError, name);
    }
  });

  it('refuses a job on any other folder at creation: 400 naming model, no job created', async () => {
    for (const name of [...Object.keys(NOT_TRAINABLE), 'no-such-folder']) {
      const error = await client.fineTuning.jobs.create({ model: name, training_file: trainingFile }).then(
        () => assert.fail(`a job on ${name} was created`),
        (err: unknown) => err,
      );
      assert.ok(error instanceof OpenAI.BadRequestError, `${name}: ${error}`);
      assert.equal(error.param, 'model', name);
      assert.equal(error.code, 'model_not_available', name);
      assert.equal(error.message, `400 Model ${name} is not available for fine-tuning or does not exist.`);
    }
    assert.equal((await client.fineTuning.jobs.list()).data.length, 0);
    const job = await client.fineTuning.jobs.create({ model: 'by-model-type', training_file: trainingFile });
    assert.equal(job.model, 'by-model-type');
  });
});
