// Pause keeps the steps done so far: with resume points rare (CHECKPOINT_EVERY_STEPS large, the
// only epoch-end one at step 42), a job paused at step ~5 gets a resume point at the step it
// reached, continues from there when resumed (not from step 0), and its losses equal those of an
// uninterrupted run. The long epoch leaves room for the steps that run while the pause arrives.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from '../support/server.ts';
import { TERMINAL, allEvents, createJob, metricsEvents, startTrainingServer, uploadFiles, waitForStatus, waitForStep } from './support.ts';

describe('pause writes a resume point at the current step', () => {
  let server: TestServer;
  let files: { training: string; validation: string };
  const client = () => server.client();

  before(async () => {
    server = await startTrainingServer({ checkpointEverySteps: 1000 });
    files = await uploadFiles(client(), { allTrainingExamples: true });
  });
  after(async () => {
    await server?.close();
    assert.deepEqual(server.specFailures, []);
  });

  it('pause at step ~5 → resume continues from the paused step with the losses of an uninterrupted run', async () => {
    const hp = { n_epochs: 1, batch_size: 1 };
    const reference = await createJob(client(), files, hp);
    assert.equal((await waitForStatus(client(), reference.id, TERMINAL)).status, 'succeeded');
    const expected = await metricsEvents(client(), reference.id);
    assert.equal(expected.length, 42);

    const job = await createJob(client(), files, hp);
    await waitForStep(client(), job.id, 4);
    assert.equal((await client().fineTuning.jobs.pause(job.id)).status, 'paused');
    // The worker records the pause's resume point, then lets the job go.
    const stored = await waitForResumePoint(job.id);
    const pausedAt = Number(/step-(\d+)$/.exec(stored)![1]);
    const before = await metricsEvents(client(), job.id);
    console.log(`paused at step ${pausedAt}`);
    assert.ok(pausedAt >= 4 && pausedAt < 42, `paused at step ${pausedAt}, before the epoch-end resume point`);
    assert.equal(before.length, pausedAt, 'the resume point is at the last recorded step');
    assert.equal((await client().fineTuning.jobs.retrieve(job.id)).status, 'paused');

    assert.equal((await client().fineTuning.jobs.resume(job.id)).status, 'queued');
    const done = await waitForStatus(client(), job.id, TERMINAL);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const messages = (await allEvents(client(), job.id)).map((e) => e.message);
    assert.ok(messages.includes(`Training continues from its last resume point (step ${pausedAt})`), messages.join('\n'));
    const metrics = await metricsEvents(client(), job.id);
    assert.deepEqual(metrics.map((m) => m.step), expected.map((m) => m.step), 'exactly one metrics event per step');
    assert.deepEqual(metrics, expected);
  });

  async function waitForResumePoint(jobId: string): Promise<string> {
    for (let i = 0; i < 600; i++) {
      const job = await server.store.jobs.get(jobId);
      // Recorded after every event of the steps before it (the engine emits it last).
      if (job?.resume_point && job.status === 'paused') return job.resume_point;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('no resume point recorded for the paused job');
  }
});
