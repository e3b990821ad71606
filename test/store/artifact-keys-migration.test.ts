// The upgrade to blob keys (migration 0006) on a real store (SQLite, and PostgreSQL when
// TEST_DATABASE_URL is set): an install whose rows held folders under DATA_DIR/jobs keeps its
// models, checkpoints and resume points, now keys of the local blob store, with the folders moved
// where those keys are.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, it } from 'node:test';
import { Migrator } from 'kysely';
import { ModelCatalogue } from '../../src/models/catalogue.ts';
import type { FsBlobStore } from '../../src/store/blobs.ts';
import { openStore, type Store, type StoreLocation } from '../../src/store/index.ts';
import { migrationProvider } from '../../src/store/migrations.ts';
import { describeOnEachBackend } from '../support/database.ts';
import { TINY_CONFIG } from '../support/server.ts';
import { queuedJob, tempStore } from '../support/store.ts';

describeOnEachBackend('upgrade to blob keys (0006_artifact_keys)', (backend) => {
  let store: Store;
  let dataDir: string;
  let location: StoreLocation;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ store, dataDir, location, cleanup } = await tempStore(backend)));
  afterEach(() => cleanup());

  it('rows get the keys of their folders, and the folders move into the blob store', async () => {
    const migrator = new Migrator({ db: store.db, provider: migrationProvider(backend) });
    assert.equal((await migrator.migrateTo('0005_worker_capacity')).error, undefined);
    // An install from before: a finished job's checkpoint (its model), and a paused job's resume point.
    const modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(path.join(modelsDir, 'base-a'), { recursive: true });
    fs.copyFileSync(TINY_CONFIG, path.join(modelsDir, 'base-a', 'config.json'));
    const done = await queuedJob(store, 'org-a', { model: 'base-a', status: 'succeeded' });
    const paused = await queuedJob(store, 'org-a', { model: 'base-a', status: 'paused' });
    const folder = (jobId: string, rest: string, file: string) => {
      const dir = path.join(dataDir, 'jobs', jobId, rest);
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, file), '{}');
      return dir;
    };
    const checkpoint = folder(done.id, 'checkpoints/step-3', 'adapter_config.json');
    const resume = folder(paused.id, 'resume/step-2', 'state.json');
    const name = 'ft:base-a:org-a::old';
    await store.db.insertInto('checkpoints').values({ id: 'ftckpt-old', job_id: done.id, organization_id: 'org-a', created_at: 1, fine_tuned_model_checkpoint: name, step_number: 3, metrics: '{}', dir: checkpoint }).execute();
    await store.db.insertInto('models').values({ id: name, organization_id: 'org-a', created_at: 1, job_id: done.id, base_model: 'base-a', dir: checkpoint }).execute();
    await store.db.insertInto('models').values({ id: 'ft:base-a:org-a::elsewhere', organization_id: 'org-a', created_at: 1, job_id: done.id, base_model: 'base-a', dir: '/mnt/other/weights' }).execute();
    await store.db.updateTable('jobs').set({ resume_point: resume }).where('id', '=', paused.id).execute();

    const upgraded = await openStore(location);
    try {
      assert.equal((await upgraded.models.get(name))?.dir, `jobs/${done.id}/checkpoints/step-3`);
      assert.equal((await upgraded.checkpoints.getByName(name))?.dir, `jobs/${done.id}/checkpoints/step-3`);
      assert.equal((await upgraded.models.get('ft:base-a:org-a::elsewhere'))?.dir, null, 'a folder no key can name: no weights');
      assert.equal((await upgraded.jobs.get(paused.id))?.resume_point, `jobs/${paused.id}/resume/step-2`);
      assert.deepEqual(await upgraded.blobs.list(`jobs/${paused.id}`), [`jobs/${paused.id}/resume/step-2/state.json`]);
      assert.equal(fs.existsSync(path.join(dataDir, 'jobs', done.id)), false, 'moved, not copied');
      const model = await new ModelCatalogue(upgraded, modelsDir).resolve(name, 'org-a');
      assert.deepEqual([model.weights, model.adapter], ['base-models/base-a', `jobs/${done.id}/checkpoints/step-3`]);
      assert.equal((upgraded.blobs as FsBlobStore).pathOf(model.adapter!), path.join(dataDir, 'blobs', 'jobs', done.id, 'checkpoints', 'step-3'));
    } finally {
      await upgraded.close();
    }
  });
});
