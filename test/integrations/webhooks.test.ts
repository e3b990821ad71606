import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import OpenAI from 'openai';
import {
  WEBHOOK_EVENT_TYPES,
  WebhookDispatcher,
  decodeWebhookSecret,
  generateWebhookSecret,
  parseWebhookEndpoints,
  signWebhook,
  verifyWebhook,
  type WebhookEventType,
} from '../../src/integrations/webhooks.ts';
import { assertMatches } from '../support/openapi.ts';

// The test vector published with the Standard Webhooks specification (and used by Svix's libraries).
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};

const vectorHeaders = (overrides: Record<string, string> = {}) => ({
  'webhook-id': VECTOR.id,
  'webhook-timestamp': String(VECTOR.timestamp),
  'webhook-signature': VECTOR.signature,
  ...overrides,
});

const SCHEMA_FOR: Record<WebhookEventType, string> = {
  'fine_tuning.job.succeeded': 'WebhookFineTuningJobSucceeded',
  'fine_tuning.job.failed': 'WebhookFineTuningJobFailed',
  'fine_tuning.job.cancelled': 'WebhookFineTuningJobCancelled',
};

describe('signWebhook / verifyWebhook', () => {
  test('reproduces the Standard Webhooks test vector', () => {
    assert.equal(signWebhook(VECTOR.secret, VECTOR.id, VECTOR.timestamp, VECTOR.body), VECTOR.signature);
    assert.equal(signWebhook(VECTOR.secret, VECTOR.id, VECTOR.timestamp, Buffer.from(VECTOR.body)), VECTOR.signature);
    assert.deepEqual(verifyWebhook(VECTOR.secret, vectorHeaders(), VECTOR.body, { nowSeconds: VECTOR.timestamp }), {
      valid: true,
      id: VECTOR.id,
      timestamp: VECTOR.timestamp,
    });
  });

  test('round trip with a fresh secret, fetch Headers and node header records', () => {
    const secret = generateWebhookSecret();
    const now = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({ hello: 'world' });
    const signature = signWebhook(secret, 'evt_1', now, body);
    const headers = { 'webhook-id': 'evt_1', 'webhook-timestamp': String(now), 'webhook-signature': signature };
    assert.equal(verifyWebhook(secret, headers, body).valid, true);
    assert.equal(verifyWebhook(secret, new Headers(headers), body).valid, true);
    assert.equal(verifyWebhook(secret, { 'Webhook-Id': 'evt_1', 'Webhook-Timestamp': String(now), 'Webhook-Signature': [signature] }, body).valid, true);
  });

  test('rejects a tampered body, a wrong secret, another id and a forged signature', () => {
    const at = { nowSeconds: VECTOR.timestamp };
    assert.deepEqual(verifyWebhook(VECTOR.secret, vectorHeaders(), '{"test": 2432232315}', at), { valid: false, reason: 'no signature matches' });
    assert.equal(verifyWebhook(generateWebhookSecret(), vectorHeaders(), VECTOR.body, at).valid, false);
    assert.equal(verifyWebhook(VECTOR.secret, vectorHeaders({ 'webhook-id': 'msg_other' }), VECTOR.body, at).valid, false);
    assert.equal(verifyWebhook(VECTOR.secret, vectorHeaders({ 'webhook-signature': 'v1,AAAA' }), VECTOR.body, at).valid, false);
    // The right bytes under another scheme's label do not count.
    assert.equal(verifyWebhook(VECTOR.secret, vectorHeaders({ 'webhook-signature': VECTOR.signature.replace('v1,', 'v1a,') }), VECTOR.body, at).valid, false);
  });

  test('accepts a match anywhere in a space-separated signature list (key rotation)', () => {
    const list = `v1,${Buffer.alloc(32).toString('base64')} v1a,abc ${VECTOR.signature}`;
    assert.equal(verifyWebhook(VECTOR.secret, vectorHeaders({ 'webhook-signature': list }), VECTOR.body, { nowSeconds: VECTOR.timestamp }).valid, true);
  });

  test('allows 300 s of clock skew either way and rejects more', () => {
    const check = (nowSeconds: number) => verifyWebhook(VECTOR.secret, vectorHeaders(), VECTOR.body, { nowSeconds }).valid;
    assert.equal(check(VECTOR.timestamp + 300), true);
    assert.equal(check(VECTOR.timestamp - 300), true);
    assert.equal(check(VECTOR.timestamp + 301), false, 'stale');
    assert.equal(check(VECTOR.timestamp - 301), false, 'from the future');
    assert.equal(verifyWebhook(VECTOR.secret, vectorHeaders(), VECTOR.body, { nowSeconds: VECTOR.timestamp + 1000, toleranceSeconds: 1000 }).valid, true);
    assert.match(
      (verifyWebhook(VECTOR.secret, vectorHeaders(), VECTOR.body) as { reason: string }).reason,
      /more than 300 s away/,
    );
  });

  test('rejects missing headers and a non-numeric timestamp', () => {
    const { ['webhook-signature']: _, ...unsigned } = vectorHeaders();
    assert.equal(verifyWebhook(VECTOR.secret, unsigned, VECTOR.body, { nowSeconds: VECTOR.timestamp }).valid, false);
    assert.equal(verifyWebhook(VECTOR.secret, vectorHeaders({ 'webhook-timestamp': '1614265330.5' }), VECTOR.body, { nowSeconds: VECTOR.timestamp }).valid, false);
  });

  test('secrets: whsec_ prefix, valid base64, at least 24 bytes', () => {
    assert.equal(decodeWebhookSecret(VECTOR.secret).length, 24);
    assert.equal(decodeWebhookSecret(generateWebhookSecret()).length, 32);
    assert.throws(() => decodeWebhookSecret('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'), /does not start with 'whsec_'/);
    assert.throws(() => decodeWebhookSecret('whsec_not base64!!'), /not valid base64/);
    assert.throws(() => decodeWebhookSecret('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS'), /not valid base64/); // dangling bits
    assert.throws(() => decodeWebhookSecret('whsec_c2hvcnQ='), /at least 24 bytes/);
  });
});

describe('parseWebhookEndpoints', () => {
  const secret = VECTOR.secret;

  test('no WEBHOOK_URLS: no endpoints, whatever the secret', () => {
    assert.deepEqual(parseWebhookEndpoints({}), []);
    assert.deepEqual(parseWebhookEndpoints({ WEBHOOK_URLS: ' , ', WEBHOOK_SECRET: 'junk' }), []);
  });

  test('comma-separated URLs share the secret', () => {
    assert.deepEqual(parseWebhookEndpoints({ WEBHOOK_URLS: 'https://a.example/hook, http://127.0.0.1:9000/x', WEBHOOK_SECRET: ` ${secret} ` }), [
      { url: 'https://a.example/hook', secret },
      { url: 'http://127.0.0.1:9000/x', secret },
    ]);
  });

  test('clear errors for a bad URL, a missing secret and a malformed one', () => {
    assert.throws(() => parseWebhookEndpoints({ WEBHOOK_URLS: 'ftp://a.example', WEBHOOK_SECRET: secret }), /WEBHOOK_URLS: 'ftp:\/\/a.example' is not an http\(s\) URL/);
    assert.throws(() => parseWebhookEndpoints({ WEBHOOK_URLS: 'not a url', WEBHOOK_SECRET: secret }), /not an http\(s\) URL/);
    assert.throws(() => parseWebhookEndpoints({ WEBHOOK_URLS: 'https://a.example' }), /WEBHOOK_SECRET is not/);
    assert.throws(() => parseWebhookEndpoints({ WEBHOOK_URLS: 'https://a.example', WEBHOOK_SECRET: 'secret123' }), /^Error: WEBHOOK_SECRET: .*whsec_/);
  });
});

// ---------------------------------------------------------------------------------------------

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A receiver on 127.0.0.1 that answers each request with the next status of `statuses` (then 200). */
async function startReceiver(statuses: number[] = []) {
  const received: Received[] = [];
  const waiters: (() => void)[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const status = statuses.shift() ?? 200;
      if (status >= 300 && status < 400) res.setHeader('location', '/elsewhere');
      res.writeHead(status).end(status < 300 ? 'ok' : 'nope');
      waiters.splice(0).forEach((w) => w());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
  return {
    url,
    received,
    nextRequest: () => new Promise<void>((resolve) => waiters.push(resolve)),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const FAST = { baseDelayMs: 5, maxDelayMs: 20 };

describe('WebhookDispatcher', () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  test('a receiver that fails twice gets 3 deliveries with one webhook-id and valid signatures', async () => {
    const receiver = await startReceiver([500, 503]);
    cleanups.push(receiver.close);
    const secret = generateWebhookSecret();
    const logged: string[] = [];
    const dispatcher = new WebhookDispatcher({ endpoints: [{ url: receiver.url, secret }], ...FAST, log: (msg) => logged.push(msg) });

    const result = await dispatcher.dispatch('fine_tuning.job.succeeded', 'ftjob-abc123');

    assert.deepEqual(result.deliveries, [{ url: receiver.url, delivered: true, attempts: 3, status: 200 }]);
    assert.equal(receiver.received.length, 3);
    const ids = new Set(receiver.received.map((r) => r.headers['webhook-id']));
    assert.deepEqual([...ids], [result.event.id]);
    assert.match(result.event.id, /^evt_/);
    for (const { headers, body } of receiver.received) {
      assert.equal(headers['content-type'], 'application/json');
      assert.match(String(headers['webhook-signature']), /^v1,[A-Za-z0-9+/]+=*$/);
      assert.deepEqual(verifyWebhook(secret, headers, body), { valid: true, id: result.event.id, timestamp: Number(headers['webhook-timestamp']) });
      assert.equal(body, receiver.received[0].body, 'every retry sends the same body');
    }
    const event = JSON.parse(receiver.received[0].body);
    assert.deepEqual(Object.keys(event), ['id', 'object', 'type', 'created_at', 'data']);
    assert.deepEqual({ ...event, created_at: 0 }, { id: result.event.id, object: 'event', type: 'fine_tuning.job.succeeded', created_at: 0, data: { id: 'ftjob-abc123' } });
    assert.ok(Math.abs(event.created_at - Date.now() / 1000) < 5);
    assertMatches('WebhookFineTuningJobSucceeded', event);
    assert.equal(logged.filter((m) => m === 'webhook delivery attempt failed').length, 2);
    await dispatcher.close();
  });

  test("OpenAI's own SDK accepts the deliveries (client.webhooks.unwrap)", async () => {
    const receiver = await startReceiver();
    cleanups.push(receiver.close);
    const secret = generateWebhookSecret();
    const dispatcher = WebhookDispatcher.fromEnv({ WEBHOOK_URLS: receiver.url, WEBHOOK_SECRET: secret }, FAST);
    assert.equal(dispatcher.enabled, true);
    const { event } = await dispatcher.dispatch('fine_tuning.job.cancelled', 'ftjob-sdk');
    const { headers, body } = receiver.received[0];
    const client = new OpenAI({ apiKey: 'unused', baseURL: 'http://127.0.0.1:9/v1' });
    const unwrapped = await client.webhooks.unwrap(body, headers as Record<string, string>, secret);
    assert.deepEqual(unwrapped, event);
    await assert.rejects(client.webhooks.unwrap(body.replace('ftjob-sdk', 'ftjob-evil'), headers as Record<string, string>, secret));
    await dispatcher.close();
    assert.equal(WebhookDispatcher.fromEnv({}).enabled, false);
  });

  test('every event type validates against its webhook schema in the spec', async () => {
    const receiver = await startReceiver();
    cleanups.push(receiver.close);
    const dispatcher = new WebhookDispatcher({ endpoints: [{ url: receiver.url, secret: VECTOR.secret }], ...FAST });
    for (const type of WEBHOOK_EVENT_TYPES) {
      const { event } = await dispatcher.dispatch(type, 'ftjob-xyz', { eventId: `evt_${type.split('.').pop()}`, createdAt: 1719168000 });
      assertMatches(SCHEMA_FOR[type], event, type);
      assertMatches(SCHEMA_FOR[type], JSON.parse(receiver.received.at(-1)!.body), type);
      assert.equal(receiver.received.at(-1)!.headers['webhook-id'], event.id);
      assert.equal(event.created_at, 1719168000);
    }
    await dispatcher.close();
  });

  test('every endpoint gets the event, each retried on its own', async () => {
    const healthy = await startReceiver();
    const flaky = await startReceiver([500]);
    cleanups.push(healthy.close, flaky.close);
    const dispatcher = new WebhookDispatcher({
      endpoints: [
        { url: healthy.url, secret: VECTOR.secret },
        { url: flaky.url, secret: generateWebhookSecret() },
      ],
      ...FAST,
    });
    const { deliveries } = await dispatcher.dispatch('fine_tuning.job.failed', 'ftjob-1');
    assert.deepEqual(deliveries.map((d) => [d.delivered, d.attempts]), [[true, 1], [true, 2]]);
    assert.equal(healthy.received[0].headers['webhook-id'], flaky.received[0].headers['webhook-id']);
    await dispatcher.close();
  });

  test('network errors are retried, then given up on without throwing', async () => {
    const gone = await startReceiver();
    await gone.close(); // the port is now closed: connections are refused
    const dispatcher = new WebhookDispatcher({ endpoints: [{ url: gone.url, secret: VECTOR.secret }], maxAttempts: 3, ...FAST });
    const { deliveries } = await dispatcher.dispatch('fine_tuning.job.cancelled', 'ftjob-1');
    assert.equal(deliveries[0].delivered, false);
    assert.equal(deliveries[0].attempts, 3);
    assert.match(deliveries[0].error!, /ECONNREFUSED/);
    await dispatcher.close();
  });

  test('a redirect is a failed attempt, not followed', async () => {
    const receiver = await startReceiver([302, 302]);
    cleanups.push(receiver.close);
    const dispatcher = new WebhookDispatcher({ endpoints: [{ url: receiver.url, secret: VECTOR.secret }], maxAttempts: 2, ...FAST });
    const { deliveries } = await dispatcher.dispatch('fine_tuning.job.succeeded', 'ftjob-1');
    assert.deepEqual(deliveries[0], { url: receiver.url, delivered: false, attempts: 2, status: 302, error: 'HTTP 302' });
    assert.equal(receiver.received.length, 2);
    await dispatcher.close();
  });

  test('a fetch that throws synchronously or hangs past the timeout never reaches the caller', async () => {
    let calls = 0;
    const throwing = new WebhookDispatcher({
      endpoints: [{ url: 'http://127.0.0.1:9/never', secret: VECTOR.secret }],
      maxAttempts: 2,
      ...FAST,
      fetch: (() => {
        calls++;
        throw new TypeError('boom');
      }) as typeof fetch,
    });
    const thrown = await throwing.dispatch('fine_tuning.job.failed', 'ftjob-1');
    assert.deepEqual([thrown.deliveries[0].delivered, thrown.deliveries[0].attempts, calls], [false, 2, 2]);

    const hanging = new WebhookDispatcher({
      endpoints: [{ url: 'http://127.0.0.1:9/never', secret: VECTOR.secret }],
      maxAttempts: 1,
      requestTimeoutMs: 30,
      fetch: ((_url: string, init: RequestInit) =>
        new Promise((_, reject) => init.signal!.addEventListener('abort', () => reject(new Error('aborted'))))) as typeof fetch,
    });
    const hung = await hanging.dispatch('fine_tuning.job.failed', 'ftjob-1');
    assert.equal(hung.deliveries[0].error, 'no answer within 30 ms');
  });

  test('close() stops pending retries promptly', async () => {
    const receiver = await startReceiver([500, 500, 500]);
    cleanups.push(receiver.close);
    const dispatcher = new WebhookDispatcher({ endpoints: [{ url: receiver.url, secret: VECTOR.secret }], baseDelayMs: 60_000 });
    const firstRequest = receiver.nextRequest();
    const pending = dispatcher.dispatch('fine_tuning.job.succeeded', 'ftjob-1');
    await firstRequest;
    const started = Date.now();
    await dispatcher.close();
    const { deliveries } = await pending;
    assert.ok(Date.now() - started < 1000);
    assert.deepEqual([deliveries[0].delivered, deliveries[0].attempts], [false, 1]);
    assert.match(deliveries[0].error!, /closed/);
    assert.equal(receiver.received.length, 1);
    // Once closed, nothing more is sent.
    const late = await dispatcher.dispatch('fine_tuning.job.succeeded', 'ftjob-2');
    assert.deepEqual([late.deliveries[0].delivered, late.deliveries[0].attempts], [false, 0]);
    assert.equal(receiver.received.length, 1);
  });

  test('backoff doubles from baseDelayMs, with jitter, up to maxDelayMs', () => {
    const at = (random: number) => new WebhookDispatcher({ endpoints: [], baseDelayMs: 1000, maxDelayMs: 60_000, random: () => random });
    assert.deepEqual([1, 2, 3, 4].map((r) => at(0).retryDelayMs(r)), [500, 1000, 2000, 4000]);
    assert.deepEqual([1, 2, 3, 4].map((r) => at(0.999999).retryDelayMs(r)), [1000, 2000, 4000, 8000]);
    assert.equal(at(0.5).retryDelayMs(10), 45_000);
    assert.equal(at(0.999999).retryDelayMs(30), 60_000);
  });

  test('a malformed endpoint secret is refused when the dispatcher is built', () => {
    assert.throws(() => new WebhookDispatcher({ endpoints: [{ url: 'http://127.0.0.1/x', secret: 'nope' }] }), /whsec_/);
  });
});
