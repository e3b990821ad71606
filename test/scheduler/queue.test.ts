import assert from 'node:assert/strict';
import { afterEach, beforeEach, it } from 'node:test';
import { claimNextJob, renewLease, requeueExpiredJobs } from '../../src/scheduler/queue.ts';
import type { Store } from '../../src/store/index.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describeOnEachBackend('job queue', (backend) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ store, cleanup } = await tempStore(backend)));
  afterEach(() => cleanup());

  const options = { leaseMs: 1000, maxRunningPerOrg: 2 };

  it('claims the oldest queued job, once', async () => {
    const first = await queuedJob(store);
    await queuedJob(store);
    const [x, y] = await Promise.all([claimNextJob(store, 'w1', options), claimNextJob(store, 'w2', options)]);
    assert.ok(x && y);
    assert.notEqual(x.id, y.id);
    assert.ok([x.id, y.id].includes(first.id));
    assert.equal(await claimNextJob(store, 'w3', options), undefined);
    const claimed = await store.jobs.get(first.id);
    assert.equal(claimed?.status, 'running');
    assert.equal(claimed?.attempts, 1);
  });

  it('never hands the same job to two workers racing for it', async () => {
    const job = await queuedJob(store);
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => claimNextJob(store, `w${i}`, options)));
    assert.deepEqual(results.filter(Boolean).map((j) => j!.id), [job.id]);
  });

  it('re-queues a job whose lease expired and lets another worker take it', async () => {
    const t = 1_000_000_000_000;
    const job = await queuedJob(store);
    assert.equal((await claimNextJob(store, 'dead-worker', { ...options, nowMs: t }))?.id, job.id);
    // Within the lease: nobody else gets it.
    assert.equal(await claimNextJob(store, 'w2', { ...options, nowMs: t + 500 }), undefined);
    // Heartbeats keep it alive past the first deadline.
    assert.equal(await renewLease(store, job.id, 'dead-worker', 1000, t + 900), true);
    assert.equal(await claimNextJob(store, 'w2', { ...options, nowMs: t + 1500 }), undefined);
    // Then the worker dies: once the lease runs out the job goes back to the queue.
    const reclaimed = await claimNextJob(store, 'w2', { ...options, nowMs: t + 2500 });
    assert.equal(reclaimed?.id, job.id);
    assert.equal(reclaimed?.worker_id, 'w2');
    assert.equal(reclaimed?.attempts, 2);
    // The dead worker's heartbeat now fails: the job is not its own any more.
    assert.equal(await renewLease(store, job.id, 'dead-worker', 1000, t + 2600), false);
    const events = await store.events.list(job.id, { limit: 10 });
    assert.match(events.data[0].message, /stopped responding/);
  });

  it('requeueExpiredJobs leaves live leases alone', async () => {
    const t = 2_000_000_000_000;
    const job = await queuedJob(store);
    await claimNextJob(store, 'w1', { ...options, nowMs: t });
    assert.deepEqual(await requeueExpiredJobs(store, t + 999), []);
    assert.deepEqual(await requeueExpiredJobs(store, t + 1001), [job.id]);
    assert.equal((await store.jobs.get(job.id))?.status, 'queued');
  });

  it('limits running jobs per organization and serves other organizations meanwhile', async () => {
    const limit = { leaseMs: 60_000, maxRunningPerOrg: 1 };
    const a1 = await queuedJob(store, 'org-a');
    const a2 = await queuedJob(store, 'org-a');
    const b1 = await queuedJob(store, 'org-b');
    assert.equal((await claimNextJob(store, 'w1', limit))?.id, a1.id);
    assert.equal((await claimNextJob(store, 'w2', limit))?.id, b1.id);
    assert.equal(await claimNextJob(store, 'w3', limit), undefined);
    await store.jobs.transition(a1.id, 'succeed');
    assert.equal((await claimNextJob(store, 'w3', limit))?.id, a2.id);
  });

  it('does not renew a lease on a job that was cancelled or paused', async () => {
    const job = await queuedJob(store);
    await claimNextJob(store, 'w1', options);
    await store.jobs.transition(job.id, 'pause');
    assert.equal(await renewLease(store, job.id, 'w1', 1000), false);
  });
});
