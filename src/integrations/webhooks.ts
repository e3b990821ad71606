// Webhooks for job outcomes, signed as OpenAI signs them (the Standard Webhooks scheme,
// https://www.standardwebhooks.com): headers webhook-id, webhook-timestamp and
// webhook-signature = "v1,<base64 HMAC-SHA256 of `${id}.${timestamp}.${body}`>", keyed with the
// bytes of the base64 secret after its `whsec_` prefix.
//
// Delivery is in memory only: retries pending when the process stops are lost. Jobs already record
// their outcome durably, so a receiver that missed a webhook can still poll the job; a persisted
// outbox can be added later without changing this module's callers.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { newId } from '../domain/naming.ts';

export type WebhookEventType = 'fine_tuning.job.succeeded' | 'fine_tuning.job.failed' | 'fine_tuning.job.cancelled';

export const WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = [
  'fine_tuning.job.succeeded',
  'fine_tuning.job.failed',
  'fine_tuning.job.cancelled',
];

/** The body OpenAI sends (spec schemas WebhookFineTuningJobSucceeded / …Failed / …Cancelled). */
export interface WebhookEvent {
  id: string;
  object: 'event';
  type: WebhookEventType;
  created_at: number;
  data: { id: string };
}

export interface WebhookEndpoint {
  url: string;
  /** `whsec_` + base64 of the key bytes. */
  secret: string;
}

type Log = (msg: string, extra?: Record<string, unknown>) => void;

// ---------------------------------------------------------------------------------------------
// Secrets, signing and verification

const SECRET_PREFIX = 'whsec_';
/** Standard Webhooks asks for 24 to 64 random bytes; shorter keys are refused as too weak. */
const MIN_SECRET_BYTES = 24;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** The HMAC key inside a `whsec_…` secret; throws a message saying what is wrong with it. */
export function decodeWebhookSecret(secret: string): Buffer {
  if (typeof secret !== 'string' || !secret.startsWith(SECRET_PREFIX)) {
    throw new Error(`A webhook secret must look like 'whsec_<base64>' (it does not start with '${SECRET_PREFIX}')`);
  }
  const encoded = secret.slice(SECRET_PREFIX.length);
  const key = BASE64.test(encoded) ? Buffer.from(encoded, 'base64') : null;
  // Node's decoder skips characters it does not know; re-encoding catches what it silently dropped.
  const unpadded = (s: string) => s.replace(/=+$/, '');
  if (!key || unpadded(key.toString('base64')) !== unpadded(encoded)) {
    throw new Error("A webhook secret must look like 'whsec_<base64>' (the part after 'whsec_' is not valid base64)");
  }
  if (key.length < MIN_SECRET_BYTES) {
    throw new Error(`A webhook secret must hold at least ${MIN_SECRET_BYTES} bytes of key (this one has ${key.length})`);
  }
  return key;
}

/** A new random secret in the `whsec_` form (32 bytes of key). */
export function generateWebhookSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64');
}

function signatureBytes(key: Buffer, id: string, timestampSeconds: number, body: string | Uint8Array): Buffer {
  return createHmac('sha256', key).update(`${id}.${timestampSeconds}.`).update(body).digest();
}

/** The `webhook-signature` header value for one message: `v1,<base64>`. */
export function signWebhook(secret: string, id: string, timestampSeconds: number, body: string | Uint8Array): string {
  return `v1,${signatureBytes(decodeWebhookSecret(secret), id, timestampSeconds, body).toString('base64')}`;
}

export type HeaderSource = Headers | Record<string, string | string[] | undefined>;

function header(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  const key = Object.keys(record).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : record[key];
  return Array.isArray(value) ? value[0] : value;
}

export type WebhookVerification =
  | { valid: true; id: string; timestamp: number }
  | { valid: false; reason: string };

export interface VerifyOptions {
  /** Allowed difference between the webhook-timestamp and now, either way (default 300 s). */
  toleranceSeconds?: number;
  /** "Now" in Unix seconds; tests pass it to check clock skew. */
  nowSeconds?: number;
}

/**
 * Checks a received webhook as a receiver would: the three headers present, the timestamp within
 * the tolerance, and at least one `v1,` entry of the (space-separated) signature list matching
 * (compared in constant time). `body` must be the raw bytes received, not re-serialized JSON.
 */
export function verifyWebhook(secret: string, headers: HeaderSource, body: string | Uint8Array, options: VerifyOptions = {}): WebhookVerification {
  const { toleranceSeconds = 300, nowSeconds = Math.floor(Date.now() / 1000) } = options;
  const id = header(headers, 'webhook-id');
  const timestampText = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestampText || !signatures) return { valid: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature header' };
  if (!/^\d+$/.test(timestampText)) return { valid: false, reason: 'webhook-timestamp is not a Unix time in seconds' };
  const timestamp = Number(timestampText);
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) {
    return { valid: false, reason: `webhook-timestamp is more than ${toleranceSeconds} s away from now` };
  }
  const expected = signatureBytes(decodeWebhookSecret(secret), id, timestamp, body);
  for (const entry of signatures.split(' ')) {
    const [version, encoded] = entry.split(',', 2);
    if (version !== 'v1' || !encoded) continue; // other schemes (v1a: asymmetric) are not ours
    const candidate = Buffer.from(encoded, 'base64');
    if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) return { valid: true, id, timestamp };
  }
  return { valid: false, reason: 'no signature matches' };
}

// ---------------------------------------------------------------------------------------------
// Configuration from the environment

/**
 * Endpoints from `WEBHOOK_URLS` (comma-separated http(s) URLs) and `WEBHOOK_SECRET` (`whsec_` +
 * base64), one secret for every endpoint. No URLs: no webhooks. Throws a clear error for a bad
 * URL, a missing secret or a malformed one, so that a misconfigured service fails at start-up
 * rather than silently never delivering.
 */
export function parseWebhookEndpoints(env: Record<string, string | undefined>): WebhookEndpoint[] {
  const urls = (env.WEBHOOK_URLS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (urls.length === 0) return [];
  for (const url of urls) {
    let parsed: URL | null = null;
    try {
      parsed = new URL(url);
    } catch {
      /* reported below */
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      throw new Error(`WEBHOOK_URLS: '${url}' is not an http(s) URL`);
    }
  }
  const secret = env.WEBHOOK_SECRET?.trim();
  if (!secret) throw new Error("WEBHOOK_URLS is set but WEBHOOK_SECRET is not; set it to 'whsec_<base64>' (at least 24 random bytes)");
  try {
    decodeWebhookSecret(secret);
  } catch (err) {
    throw new Error(`WEBHOOK_SECRET: ${(err as Error).message}`);
  }
  return urls.map((url) => ({ url, secret }));
}

// ---------------------------------------------------------------------------------------------
// Delivery

export interface WebhookDispatcherOptions {
  endpoints: WebhookEndpoint[];
  fetch?: typeof fetch;
  /** Attempts per endpoint, the first included (default 8). */
  maxAttempts?: number;
  /** Delay before the first retry; doubles each retry, with jitter (default 1000 ms). */
  baseDelayMs?: number;
  /** Upper bound of one retry delay (default 60 000 ms). */
  maxDelayMs?: number;
  /** One attempt is abandoned (and retried) after this long (default 10 000 ms). */
  requestTimeoutMs?: number;
  log?: Log;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  /** Uniform [0, 1) for the jitter (tests). */
  random?: () => number;
}

export interface DispatchOptions {
  /** Event id (default a new `evt_…`); a caller that may dispatch twice can pass a stable one. */
  eventId?: string;
  /** `created_at` of the event in Unix seconds (default now). */
  createdAt?: number;
}

export interface DeliveryResult {
  url: string;
  delivered: boolean;
  attempts: number;
  /** HTTP status of the last attempt, if one got an answer. */
  status?: number;
  /** Why the last attempt failed. */
  error?: string;
}

export interface DispatchResult {
  event: WebhookEvent;
  deliveries: DeliveryResult[];
}

/** Thrown inside the retry loop when close() interrupts a delivery; never reaches callers. */
class Closed extends Error {}

export class WebhookDispatcher {
  private readonly endpoints: WebhookEndpoint[];
  private readonly fetch: typeof fetch;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly requestTimeoutMs: number;
  private readonly log: Log;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly closing = new AbortController();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(options: WebhookDispatcherOptions) {
    for (const endpoint of options.endpoints) decodeWebhookSecret(endpoint.secret); // fail fast, not at delivery
    this.endpoints = [...options.endpoints];
    this.fetch = options.fetch ?? globalThis.fetch;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 8);
    this.baseDelayMs = options.baseDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.log = options.log ?? (() => {});
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  /** A dispatcher for the endpoints of WEBHOOK_URLS / WEBHOOK_SECRET (none: dispatch sends nothing). */
  static fromEnv(env: Record<string, string | undefined>, options: Omit<WebhookDispatcherOptions, 'endpoints'> = {}): WebhookDispatcher {
    return new WebhookDispatcher({ ...options, endpoints: parseWebhookEndpoints(env) });
  }

  /** Whether any endpoint is configured. */
  get enabled(): boolean {
    return this.endpoints.length > 0;
  }

  /** The event body for a job outcome, as the spec's webhook schemas describe it. */
  buildEvent(type: WebhookEventType, jobId: string, options: DispatchOptions = {}): WebhookEvent {
    return {
      id: options.eventId ?? newId('evt_'),
      object: 'event',
      type,
      created_at: options.createdAt ?? Math.floor(this.now() / 1000),
      data: { id: jobId },
    };
  }

  /**
   * Sends the event to every endpoint, retrying each on its own. Never rejects: failures are
   * logged and reported in the result. Callers normally do not await it (fire and forget);
   * tests and shutdown code can.
   */
  dispatch(type: WebhookEventType, jobId: string, options: DispatchOptions = {}): Promise<DispatchResult> {
    const event = this.buildEvent(type, jobId, options);
    const body = JSON.stringify(event);
    const all = Promise.all(this.endpoints.map((endpoint) => this.deliver(endpoint, event, body))).then(
      (deliveries) => ({ event, deliveries }),
    );
    this.inFlight.add(all);
    void all.finally(() => this.inFlight.delete(all));
    return all;
  }

  /** Stops pending retries and aborts attempts in progress; resolves once all deliveries ended. */
  async close(): Promise<void> {
    this.closing.abort();
    await Promise.allSettled([...this.inFlight]);
  }

  /** Delay before retry number `retry` (1-based): half fixed, half random, so that receivers
   * recovering from an outage are not hit by every sender at the same instant. */
  retryDelayMs(retry: number): number {
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (retry - 1));
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  private async deliver(endpoint: WebhookEndpoint, event: WebhookEvent, body: string): Promise<DeliveryResult> {
    const result: DeliveryResult = { url: endpoint.url, delivered: false, attempts: 0 };
    try {
      for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
        if (attempt > 1) await this.sleep(this.retryDelayMs(attempt - 1));
        if (this.closing.signal.aborted) throw new Closed();
        result.attempts = attempt;
        const outcome = await this.attempt(endpoint, event.id, body);
        result.status = outcome.status;
        result.error = outcome.error;
        if (outcome.ok) {
          result.delivered = true;
          delete result.error;
          return result;
        }
        this.log('webhook delivery attempt failed', { url: endpoint.url, event: event.id, type: event.type, attempt, status: outcome.status, error: outcome.error });
      }
      this.log('webhook delivery gave up', { url: endpoint.url, event: event.id, type: event.type, attempts: result.attempts });
    } catch (err) {
      // Closed, or a bug: either way the caller (a job's lifecycle) must not see it.
      result.error = err instanceof Closed ? 'dispatcher closed before the webhook was delivered' : String(err);
      this.log('webhook delivery stopped', { url: endpoint.url, event: event.id, type: event.type, attempts: result.attempts, error: result.error });
    }
    return result;
  }

  private async attempt(endpoint: WebhookEndpoint, id: string, body: string): Promise<{ ok: boolean; status?: number; error?: string }> {
    // Each attempt is signed with its own timestamp (the id and body stay the same), so a retry
    // sent minutes later still passes the receiver's 300-second clock-skew check.
    const timestamp = Math.floor(this.now() / 1000);
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.requestTimeoutMs);
    const onClose = () => timeout.abort();
    this.closing.signal.addEventListener('abort', onClose, { once: true });
    try {
      const response = await this.fetch(endpoint.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tuneforge-webhooks',
          'webhook-id': id,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': signWebhook(endpoint.secret, id, timestamp, body),
        },
        body,
        // A redirect is not a delivery (Standard Webhooks); following it could also leak the body.
        redirect: 'manual',
        signal: timeout.signal,
      });
      await response.body?.cancel().catch(() => {}); // the answer's body is not used; free the socket
      const ok = response.status >= 200 && response.status < 300;
      return ok ? { ok, status: response.status } : { ok, status: response.status, error: `HTTP ${response.status}` };
    } catch (err) {
      if (this.closing.signal.aborted) throw new Closed();
      const error = timeout.signal.aborted ? `no answer within ${this.requestTimeoutMs} ms` : String((err as Error)?.cause ?? err);
      return { ok: false, error };
    } finally {
      clearTimeout(timer);
      this.closing.signal.removeEventListener('abort', onClose);
    }
  }

  /** Waits `ms`, or less if close() is called. The timer is kept referenced on purpose: a
   * pending retry holds the process open until it is delivered or close() is called. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closing.signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.closing.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.closing.signal.addEventListener('abort', done, { once: true });
    });
  }
}
