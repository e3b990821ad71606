import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { openStore, type Store } from '../../src/store/index.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describe('store repositories', () => {
  let store: Store;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ store, dataDir, cleanup } = await tempStore()));
  afterEach(() => cleanup());

  it('keeps data across reopen (migrations run once)', async () => {
    const job = await queuedJob(store, 'org-a', { metadata: { k: 'v' } });
    const again = await openStore(dataDir);
    try {
      assert.deepEqual((await again.jobs.get(job.id))?.metadata, { k: 'v' });
    } finally {
      await again.close();
    }
  });

  it('scopes reads by organization', async () => {
    const job = await queuedJob(store, 'org-a');
    assert.equal(await store.jobs.get(job.id, 'org-b'), undefined);
    assert.equal((await store.jobs.get(job.id, 'org-a'))?.id, job.id);
  });

  it('applies status changes only from the expected statuses', async () => {
    const job = await queuedJob(store);
    assert.equal(await store.jobs.update(job.id, { status: 'succeeded' }, ['running']), undefined);
    assert.equal((await store.jobs.update(job.id, { status: 'cancelled' }, ['queued']))?.status, 'cancelled');
  });

  it('paginates jobs newest first with after/limit and filters on metadata pairs', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await queuedJob(store, 'org-a', { metadata: { i: String(i % 2), all: 'yes' } })).id);
    const first = await store.jobs.list('org-a', { limit: 2 });
    assert.deepEqual(first.data.map((j) => j.id), [ids[4], ids[3]]);
    assert.equal(first.hasMore, true);
    const rest = await store.jobs.list('org-a', { limit: 10, after: ids[3] });
    assert.deepEqual(rest.data.map((j) => j.id), [ids[2], ids[1], ids[0]]);
    assert.equal(rest.hasMore, false);
    const odd = await store.jobs.list('org-a', { limit: 10, metadata: { i: '1', all: 'yes' } });
    assert.deepEqual(odd.data.map((j) => j.id), [ids[3], ids[1]]);
    assert.deepEqual((await store.jobs.list('org-a', { limit: 10, after: 'ftjob-unknown' })).data, []);
  });
});
