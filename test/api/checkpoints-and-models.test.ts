// Checkpoint permissions (admin only) and model endpoints: the failures around them, and a model that is also its job's final checkpoint.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BASE_MODEL, expectError, json, startTestServer, type TestServer } from '../support/server.ts';

const A = { key: 'sk-a' };
const ADMIN_A = { key: 'sk-admin-a' };
const ADMIN_B = { key: 'sk-admin-b' };

describe('checkpoint permissions and models: bad input', () => {
  let server: TestServer;
  const checkpoint = 'ft:tiny-test:org-a:s:abcdefgh:ckpt-step-5';
  const model = 'ft:tiny-test:org-a:s:abcdefgh';
  before(async () => {
    server = await startTestServer({
      env: { API_KEYS: 'sk-a:org-a,sk-b:org-b', ADMIN_API_KEYS: 'sk-admin-a:org-a,sk-admin-b:org-b' },
    });
    // A finished job's outputs, as a worker records them: the final checkpoint has the model's name.
    for (const [step, name] of [[5, checkpoint], [10, model]] as const) {
      await server.store.checkpoints.add({
        id: `ftckpt_test${step}`, job_id: 'ftjob-test', organization_id: 'org-a', created_at: 1, fine_tuned_model_checkpoint: name,
        step_number: step, metrics: { step, train_loss: 0.5 }, dir: null,
      });
    }
    await server.store.models.add({ id: model, organization_id: 'org-a', created_at: 1, job_id: 'ftjob-test', base_model: BASE_MODEL, dir: null });
  });
  after(() => server.close());

  const permissions = (name: string) => `/v1/fine_tuning/checkpoints/${encodeURIComponent(name)}/permissions`;

  it('is admin-only (403 for user keys)', async () => {
    expectError(await server.request('GET', permissions(checkpoint), A), 403, { code: 'insufficient_permissions' });
    expectError(await server.request('POST', permissions(checkpoint), { ...A, ...json({ project_ids: ['org-b'] }) }), 403);
    expectError(await server.request('DELETE', `${permissions(checkpoint)}/cp_x`, A), 403);
  });

  it('answers 404 for unknown checkpoints, other organizations’ checkpoints and unknown permissions', async () => {
    expectError(await server.request('GET', permissions('ft:tiny-test:org-a::zzzzzzzz:ckpt-step-1'), ADMIN_A), 404);
    expectError(await server.request('GET', permissions(checkpoint), ADMIN_B), 404);
    expectError(await server.request('DELETE', `${permissions(checkpoint)}/cp_nope`, ADMIN_A), 404, { param: 'permission_id' });
  });

  it('validates the create body', async () => {
    expectError(await server.request('POST', permissions(checkpoint), { ...ADMIN_A, ...json({}) }), 400, { param: 'project_ids' });
    expectError(await server.request('POST', permissions(checkpoint), { ...ADMIN_A, ...json({ project_ids: [] }) }), 400, { param: 'project_ids' });
    expectError(await server.request('POST', permissions(checkpoint), { ...ADMIN_A, ...json({ project_ids: 'org-b' }) }), 400, { param: 'project_ids' });
  });

  it('grants once per project and lists by project', async () => {
    const first = await server.request('POST', permissions(checkpoint), { ...ADMIN_A, ...json({ project_ids: ['org-b', 'org-b', 'org-c'] }) });
    assert.equal(first.status, 200);
    assert.equal(first.body.data.length, 2);
    const again = await server.request('POST', permissions(checkpoint), { ...ADMIN_A, ...json({ project_ids: ['org-b'] }) });
    assert.equal(again.body.data[0].id, first.body.data[0].id);
    const onlyC = await server.request('GET', `${permissions(checkpoint)}?project_id=org-c`, ADMIN_A);
    assert.deepEqual(onlyC.body.data.map((p: any) => p.project_id), ['org-c']);
    const asc = await server.request('GET', `${permissions(checkpoint)}?order=ascending&limit=1`, ADMIN_A);
    assert.equal(asc.body.data[0].project_id, 'org-b');
    assert.equal(asc.body.has_more, true);
  });

  it('lists the model once (its final checkpoint is the model), and the earlier checkpoint', async () => {
    const ids = (await server.request('GET', '/v1/models', A)).body.data.map((m: any) => m.id);
    assert.equal(ids.filter((id: string) => id === model).length, 1);
    assert.ok(ids.includes(checkpoint));
    // The final checkpoint's permissions go by the model's name.
    const shared = await server.request('POST', permissions(model), { ...ADMIN_A, ...json({ project_ids: ['org-b'] }) });
    assert.equal(shared.status, 200);
    const seenByB = (await server.request('GET', '/v1/models', { key: 'sk-b' })).body.data.filter((m: any) => m.id === model);
    assert.deepEqual(seenByB.map((m: any) => m.owned_by), ['org-a']);
    await server.request('DELETE', `${permissions(model)}/${shared.body.data[0].id}`, ADMIN_A);
  });

  it('models: 404 for unknown or foreign models, 403 for deleting a base model', async () => {
    expectError(await server.request('GET', '/v1/models/nope', A), 404, { param: 'model', code: 'model_not_found' });
    expectError(await server.request('GET', `/v1/models/${encodeURIComponent(model)}`, { key: 'sk-b' }), 404);
    expectError(await server.request('DELETE', `/v1/models/${encodeURIComponent(model)}`, { key: 'sk-b' }), 404);
    expectError(await server.request('DELETE', `/v1/models/${BASE_MODEL}`, A), 403, { param: 'model' });
    expectError(await server.request('DELETE', '/v1/models/ft:tiny-test:org-a::nothing1', A), 404);
    const own = await server.request('GET', `/v1/models/${encodeURIComponent(model)}`, A);
    assert.equal(own.body.owned_by, 'org-a');
  });
});
