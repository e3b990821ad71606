// A job whose training step is estimated to need more memory than the worker may use fails at
// once, through the API, with insufficient_memory and a message naming the estimate and the limit,
// instead of being killed mid-run.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../support/server.ts';
import { TERMINAL, allEvents, createJob, startTrainingServer, uploadFiles, waitForStatus } from './support.ts';

describe('training memory limit (real engine, tiny model)', () => {
  let server: TestServer;

  before(async () => {
    // Less than the runtime alone: no micro-batch of the tiny model fits.
    server = await startTrainingServer({ memoryLimitBytes: 100e6 });
  });
  after(async () => {
    await server?.close();
    assert.deepEqual(server.specFailures, []);
  });

  it('fails with insufficient_memory before the first step', async () => {
    const client = server.client();
    const job = await createJob(client, await uploadFiles(client), { n_epochs: 1, batch_size: 4 });
    const done = await waitForStatus(client, job.id, TERMINAL);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'insufficient_memory');
    assert.match(done.error!.message, /needs an estimated \d+\.\d\d GB of memory for micro-batches of \d+ × \d+ tokens, over this worker's limit of 0\.10 GB/);
    assert.equal(done.trained_tokens, null);
    const events = await allEvents(client, job.id);
    assert.ok(!events.some((e) => e.type === 'metrics'), 'no step ran');
  });
});
