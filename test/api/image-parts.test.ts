// Images in chat examples (issue 12 item 4): no model tuneforge trains reads them, so a training or
// validation file with an image_url content part fails the job at file validation, naming the line,
// instead of passing validation and failing in training.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type OpenAI from 'openai';
import { toFile } from 'openai';
import { BASE_MODEL, chatJsonl, startTestServer, waitFor, type TestServer } from '../support/server.ts';

const withImageOnLine = (n: number, lines: number) => {
  const out = chatJsonl(lines).trim().split('\n');
  const example = JSON.parse(out[n - 1]);
  example.messages[1].content = [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }];
  out[n - 1] = JSON.stringify(example);
  return out.join('\n') + '\n';
};

describe('image content parts in datasets', () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    server = await startTestServer();
    client = server.client();
  });
  after(() => server.close());

  const upload = async (jsonl: string) => (await client.files.create({ file: await toFile(Buffer.from(jsonl), 'd.jsonl'), purpose: 'fine-tune' })).id;
  const settled = (id: string) => waitFor(() => client.fineTuning.jobs.retrieve(id), (job) => job.status !== 'validating_files');

  it('fail the job at validation with the line and the reason, in the training file and the validation file', async () => {
    const message = "tuneforge's models cannot train on images yet (no vision models), so content parts must be text";
    const training = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: await upload(withImageOnLine(7, 12)) });
    const failed = await settled(training.id);
    assert.equal(failed.status, 'failed');
    assert.deepEqual(failed.error, {
      code: 'invalid_training_file',
      param: 'training_file',
      message: `Invalid file format. Example 7, message 2 has an image in 'content[1]': ${message}`,
    });

    const validation = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: await upload(chatJsonl(12)), validation_file: await upload(withImageOnLine(2, 3)) });
    const invalid = await settled(validation.id);
    assert.equal(invalid.status, 'failed');
    assert.equal(invalid.error?.code, 'invalid_validation_file');
    assert.equal(invalid.error?.param, 'validation_file');
    assert.match(invalid.error!.message, /Example 2, message 2 has an image in 'content\[1\]'/);
    assert.deepEqual(server.specFailures, []);
  });
});
