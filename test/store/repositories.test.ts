import assert from 'node:assert/strict';
import { afterEach, beforeEach, it } from 'node:test';
import { canTransition, nextStatus, type JobAction } from '../../src/domain/jobs.ts';
import { JOB_STATUSES } from '../../src/domain/job-status.ts';
import { Migrator, sql } from 'kysely';
import { migrationProvider } from '../../src/store/migrations.ts';
import { openStore, type JobPatch, type Store, type StoreLocation } from '../../src/store/index.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describeOnEachBackend('store repositories', (backend) => {
  let store: Store;
  let location: StoreLocation;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ store, location, cleanup } = await tempStore(backend)));
  afterEach(() => cleanup());

  it('keeps data across reopen (migrations run once)', async () => {
    const job = await queuedJob(store, 'org-a', { metadata: { k: 'v' } });
    const again = await openStore(location);
    try {
      assert.deepEqual((await again.jobs.get(job.id))?.metadata, { k: 'v' });
    } finally {
      await again.close();
    }
  });

  it('prunes checkpoints to the newest, or to the newest plus the best by a metric', async () => {
    const job = await queuedJob(store, 'org-a');
    const rewards = [0.9, 0.1, 0.8, 0.2, 0.3];
    for (const [i, reward] of rewards.entries()) {
      const step = i + 1;
      await store.checkpoints.add({
        id: `ftckpt_${step}`, job_id: job.id, organization_id: 'org-a', created_at: step, step_number: step,
        fine_tuned_model_checkpoint: `ft:m:org-a::x:ckpt-step-${step}`, metrics: { step, valid_reward_mean: reward }, dir: null,
      });
    }
    const steps = async () => (await store.checkpoints.listForJob(job.id, { limit: 10 })).data.map((c) => c.step_number);
    const pruned = await store.checkpoints.prune(job.id, 3, 'valid_reward_mean');
    assert.deepEqual(pruned.map((c) => c.step_number).sort(), [2, 4]);
    assert.deepEqual(await steps(), [5, 3, 1]); // the newest (final model), then the two best
    await store.checkpoints.prune(job.id, 2);
    assert.deepEqual(await steps(), [5, 3]);
    await store.checkpoints.prune(job.id, 0); // a cancelled job keeps none
    assert.deepEqual(await steps(), []);
  });

  it('reads an expired file as absent, except for the validation of a job created before it expired', async () => {
    const past = Math.floor(Date.now() / 1000) - 10;
    await store.files.insert({
      id: 'file-expired', organization_id: 'org-a', filename: 'a.jsonl', purpose: 'fine-tune', bytes: 1,
      created_at: past - 60, expires_at: past, status: 'processed', status_details: null,
    });
    assert.equal(await store.files.get('file-expired', 'org-a'), undefined);
    assert.equal((await store.files.get('file-expired', 'org-a', true))?.id, 'file-expired');
    assert.equal(await store.files.get('file-expired', 'org-b', true), undefined);
  });

  it("renames the lease column after its unit and keeps a running job's lease", async () => {
    const job = await queuedJob(store, 'org-a', { status: 'running', worker_id: 'w1' });
    const lease = Date.now() + 30_000;
    // Back to the schema before the rename, with a lease written under the old name.
    const migrator = new Migrator({ db: store.db, provider: migrationProvider(backend) });
    const { error } = await migrator.migrateTo('0002_upload_file_expiry');
    assert.equal(error, undefined);
    await sql`update jobs set lease_expires_at = ${lease} where id = ${job.id}`.execute(store.db);
    const again = await openStore(location);
    try {
      assert.equal((await again.jobs.get(job.id))?.lease_expires_at_ms, lease);
      assert.equal(await again.jobs.countRunning('org-a', lease - 1), 1);
    } finally {
      await again.close();
    }
  });

  it('scopes reads by organization', async () => {
    const job = await queuedJob(store, 'org-a');
    assert.equal(await store.jobs.get(job.id, 'org-b'), undefined);
    assert.equal((await store.jobs.get(job.id, 'org-a'))?.id, job.id);
  });

  it("bumps a job's version with every update, and only then", async () => {
    const job = await queuedJob(store, 'org-a');
    const versions = [job.version];
    const now = Date.now();
    const record = async () => versions.push((await store.jobs.get(job.id))!.version);
    await store.jobs.update(job.id, { estimated_finish: 1 });
    await record();
    await store.jobs.tryClaim(job.id, 'w1', { nowMs: now, leaseMs: 1, maxRunningPerOrg: 1 });
    await record();
    await store.jobs.renewLease(job.id, 'w1', now + 1);
    await record();
    await store.jobs.updateOwned(job.id, 'w1', { trained_tokens: 5 });
    await record();
    await store.jobs.requeueExpired(job.id, now + 2);
    await record();
    await store.jobs.transition(job.id, 'cancel');
    await record();
    assert.deepEqual(versions, [0, 1, 2, 3, 4, 5, 6]);
    // Refused updates leave it as it was.
    assert.equal(await store.jobs.transition(job.id, 'pause'), undefined);
    assert.equal(await store.jobs.update(job.id, { estimated_finish: 2 }, ['running']), undefined);
    assert.equal(await store.jobs.version(job.id, 'org-a'), 6);
    assert.equal(await store.jobs.version(job.id, 'org-b'), undefined);
    assert.deepEqual((await store.jobs.getMany([job.id, 'ftjob-unknown'], 'org-a')).map((j) => j.id), [job.id]);
    assert.deepEqual(await store.jobs.getMany([job.id], 'org-b'), []);
  });

  it('writes a status only by an action its lifecycle allows from the status the job has', async () => {
    const actions: JobAction[] = ['validated', 'invalid', 'start', 'succeed', 'fail', 'cancel', 'pause', 'resume', 'requeue'];
    for (const status of JOB_STATUSES) {
      for (const action of actions) {
        const job = await queuedJob(store, 'org-a', { status });
        const moved = await store.jobs.transition(job.id, action);
        const now = (await store.jobs.get(job.id))!.status;
        if (canTransition(status, action)) {
          assert.equal(moved?.status, nextStatus(status, action), `${action} from ${status}`);
          assert.equal(now, nextStatus(status, action));
        } else {
          assert.equal(moved, undefined, `${action} from ${status} is not in the lifecycle`);
          assert.equal(now, status);
        }
      }
    }
    // The status a caller expects, and the worker holding the job, guard the change too.
    const job = await queuedJob(store);
    assert.equal(await store.jobs.transition(job.id, 'cancel', {}, { status: 'running' }), undefined);
    assert.equal((await store.jobs.transition(job.id, 'cancel', {}, { status: 'queued' }))?.status, 'cancelled');
  });

  it('refuses a status written around the lifecycle', async () => {
    const job = await queuedJob(store);
    const around = { status: 'succeeded' } as JobPatch;
    await assert.rejects(store.jobs.update(job.id, around), /lifecycle/);
    await assert.rejects(store.jobs.update(job.id, { ...around, estimated_finish: 1 }, ['queued']), /lifecycle/);
    await assert.rejects(store.jobs.updateOwned(job.id, 'w1', around), /lifecycle/);
    await assert.rejects(store.jobs.transition(job.id, 'cancel', around), /lifecycle/);
    assert.equal((await store.jobs.get(job.id))?.status, 'queued');
  });

  it('claims no more than the organization limit when different jobs are claimed at once', async () => {
    const jobs = [];
    for (let i = 0; i < 6; i++) jobs.push(await queuedJob(store, 'org-a'));
    // Six queries at once first, so that a connection pool has six connections ready and the
    // claims below really run side by side.
    await Promise.all(jobs.map((job) => store.jobs.get(job.id)));
    const now = Date.now();
    const claims = await Promise.all(jobs.map((job, i) => store.jobs.tryClaim(job.id, `w${i}`, { nowMs: now, leaseMs: 60_000, maxRunningPerOrg: 2 })));
    assert.equal(claims.filter(Boolean).length, 2);
    assert.equal(await store.jobs.countRunning('org-a', now), 2);
  });

  it('paginates jobs newest first with after/limit and filters on metadata pairs', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await queuedJob(store, 'org-a', { metadata: { i: String(i % 2), all: 'yes' } })).id);
    const first = await store.jobs.listVersions('org-a', { limit: 2 });
    assert.deepEqual(first.data.map((j) => j.id), [ids[4], ids[3]]);
    assert.equal(first.hasMore, true);
    const rest = await store.jobs.listVersions('org-a', { limit: 10, after: ids[3] });
    assert.deepEqual(rest.data.map((j) => j.id), [ids[2], ids[1], ids[0]]);
    assert.equal(rest.hasMore, false);
    const odd = await store.jobs.listVersions('org-a', { limit: 10, metadata: { i: '1', all: 'yes' } });
    assert.deepEqual(odd.data.map((j) => j.id), [ids[3], ids[1]]);
    assert.deepEqual((await store.jobs.listVersions('org-a', { limit: 10, after: 'ftjob-unknown' })).data, []);
  });
});
