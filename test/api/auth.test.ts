import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.ts';
import { startServer } from '../../src/api/server.ts';
import { expectError, startTestServer, type TestServer } from '../support/server.ts';

describe('auth', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { API_KEYS: 'sk-a:org-a, sk-b:org-b', ADMIN_API_KEYS: 'sk-admin:org-a' } });
  });
  after(() => server.close());

  it('answers 401 without a key, in the envelope', async () => {
    expectError(await server.request('GET', '/v1/models'), 401, { code: 'missing_api_key' });
    expectError(await server.request('GET', '/v1/files', { headers: { authorization: 'Basic abc' } }), 401, { code: 'missing_api_key' });
  });

  it('answers 401 for an unknown key, without echoing it whole', async () => {
    const res = await server.request('GET', '/v1/models', { key: 'sk-not-a-real-key-123456' });
    expectError(res, 401, { code: 'invalid_api_key' });
    assert.ok(!res.body.error.message.includes('sk-not-a-real-key-123456'));
  });

  it('accepts configured user and admin keys', async () => {
    assert.equal((await server.request('GET', '/v1/models', { key: 'sk-a' })).status, 200);
    assert.equal((await server.request('GET', '/v1/models', { key: 'sk-admin' })).status, 200);
  });

  it('answers unknown URLs with a 404 envelope', async () => {
    expectError(await server.request('GET', '/v1/nothing-here', { key: 'sk-a' }), 404, { code: 'unknown_url' });
  });
});

describe('keyless mode', () => {
  it('serves one local organization without keys', async () => {
    const server = await startTestServer({ env: {} });
    try {
      const res = await server.request('GET', '/v1/models');
      assert.equal(res.status, 200);
      const file = await server.client().files.list();
      assert.deepEqual(file.data, []);
    } finally {
      await server.close();
    }
  });

  it('refuses to listen beyond loopback without keys', async () => {
    const config = loadConfig({ host: '0.0.0.0', port: 0 }, {});
    await assert.rejects(startServer(config, { logger: false }), /API_KEYS/);
  });
});
