// Weights & Biases: the `integrations` parameter of job creation, and a logger that sends a job's
// metrics to W&B through its HTTP API when WANDB_API_KEY is configured.
//
// W&B's wire protocol, as its own SDK uses it (learned from the wandb client, not copied):
// - every request authenticates with HTTP Basic, user `api`, password the API key;
// - a run is created (or found again: it is an upsert) by the GraphQL mutation `upsertBucket`
//   on POST {base}/graphql, where the bucket `name` is the run id, `modelName` the project,
//   `entityName` the team or user (null: the key's default entity, returned in the answer);
// - history goes to POST {base}/files/{entity}/{project}/{run}/file_stream as
//   {"files": {"wandb-history.jsonl": {"offset": <index of the first line>, "content": [<JSON lines>]}}},
//   the summary as "wandb-summary.json" at offset 0, and the run ends with {"complete": true, "exitcode": n}.
//
// Nothing here can fail a job: every error is caught, logged, and turns the run into a no-op.

// ---------------------------------------------------------------------------------------------
// The `integrations` request parameter

export interface WandbSettings {
  project: string;
  name?: string | null;
  entity?: string | null;
  tags?: string[];
}

export interface WandbIntegration {
  type: 'wandb';
  wandb: WandbSettings;
}

/** FineTuningJob.integrations has maxItems 5 in OpenAI's spec. */
export const MAX_INTEGRATIONS = 5;
/** W&B refuses tags outside 1–64 characters ("must be between 1 and 64 characters"). */
export const MAX_WANDB_TAG_LENGTH = 64;
/** W&B's limits on project and entity names (its SDK checks them the same way): 1–128 characters, none of / \ # ? % : */
const WANDB_NAME = { type: 'string', minLength: 1, maxLength: 128, pattern: '^[^/\\\\#?%:]*$' };

/**
 * The `integrations` of a job create request, as its route schema: OpenAI's (at most 5
 * `{type: 'wandb', wandb: {project, name?, entity?, tags?}}`, nothing else) with W&B's own naming rules,
 * so that a job is refused up front rather than silently failing to log later.
 */
export const INTEGRATIONS_SCHEMA = {
  type: ['array', 'null'],
  maxItems: MAX_INTEGRATIONS,
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'wandb'],
    properties: {
      type: { enum: ['wandb'] },
      wandb: {
        type: 'object',
        additionalProperties: false,
        required: ['project'],
        properties: {
          project: WANDB_NAME,
          name: { type: ['string', 'null'] },
          entity: { ...WANDB_NAME, type: ['string', 'null'] },
          tags: { type: 'array', items: { type: 'string', minLength: 1, maxLength: MAX_WANDB_TAG_LENGTH } },
        },
      },
    },
  },
};

// ---------------------------------------------------------------------------------------------
// Logging a job to W&B

type Log = (msg: string, extra?: Record<string, unknown>) => void;

export const DEFAULT_WANDB_BASE_URL = 'https://api.wandb.ai';

export interface WandbLoggerOptions {
  /** No key: the logger does nothing (and says so once, when a job asks for W&B). */
  apiKey?: string | null;
  baseUrl?: string;
  fetch?: typeof fetch;
  log?: Log;
  /** History lines are batched and sent at most this often (default 2000 ms). */
  flushIntervalMs?: number;
  /** With nothing to send, a keep-alive is posted this often so W&B does not mark the run crashed (default 30 s). */
  heartbeatMs?: number;
  /** One request is abandoned after this long (default 10 000 ms). */
  requestTimeoutMs?: number;
  /** After this many failed posts in a row the run stops sending (default 5). */
  maxConsecutiveFailures?: number;
  /** Prefix of the default tags `<prefix>/finetune`, `<prefix>/<base model>`, `<prefix>/<job id>`;
   * 'openai' by default, as OpenAI tags its runs, so existing W&B filters keep working. */
  defaultTagPrefix?: string;
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/** `apiKey` from WANDB_API_KEY and `baseUrl` from WANDB_BASE_URL (default https://api.wandb.ai). */
export function wandbOptionsFromEnv(env: Record<string, string | undefined>): Pick<WandbLoggerOptions, 'apiKey' | 'baseUrl'> {
  const apiKey = env.WANDB_API_KEY?.trim() || null;
  const baseUrl = env.WANDB_BASE_URL?.trim() || DEFAULT_WANDB_BASE_URL;
  let parsed: URL | null = null;
  try {
    parsed = new URL(baseUrl);
  } catch {
    /* reported below */
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) throw new Error(`WANDB_BASE_URL: '${baseUrl}' is not an http(s) URL`);
  return { apiKey, baseUrl };
}

/** What the job lifecycle knows about a job when it starts training. */
export interface WandbJobInfo {
  id: string;
  /** Base model, for the default tag. */
  model: string;
  /** The job's stored `integrations` (already validated at creation). */
  integrations: readonly unknown[] | null | undefined;
  /** Shown as the run's config in W&B: hyperparameters, method, files, seed… */
  config?: Record<string, unknown>;
}

/** A step's metrics as the job's `metrics` events carry them: `step` plus named numbers. */
export type WandbMetrics = { step?: number } & Record<string, unknown>;

export type JobOutcome = 'succeeded' | 'failed' | 'cancelled';

/** The W&B side of one job: zero or more runs (one per wandb integration). Never throws. */
export interface WandbJobLog {
  /** Resolves, never rejects, to how many W&B runs were created for the job (0 when W&B is
   * disabled, not requested, or unreachable). Nothing needs to wait for it. */
  readonly started: Promise<number>;
  /** Queues one step's metrics; they are sent in batches once the run exists. */
  log(metrics: WandbMetrics): void;
  /** Sends what is queued, the summary, and marks the runs finished (exit code 0 only on success). */
  finish(outcome: JobOutcome, summary?: Record<string, unknown>): Promise<void>;
}

const NO_OP_JOB_LOG: WandbJobLog = { started: Promise.resolve(0), log() {}, async finish() {} };

const UPSERT_BUCKET = `mutation UpsertBucket($name: String, $project: String, $entity: String, $displayName: String, $tags: [String!], $config: JSONString) {
  upsertBucket(input: {name: $name, modelName: $project, entityName: $entity, displayName: $displayName, tags: $tags, config: $config}) {
    bucket { id name displayName historyLineCount project { name entity { name } } }
    inserted
  }
}`;

const HISTORY_FILE = 'wandb-history.jsonl';
const SUMMARY_FILE = 'wandb-summary.json';
/** Lines per file_stream post; W&B's own client splits posts well below its 10 MB limit. */
const MAX_LINES_PER_POST = 1000;
/** Lines kept while W&B is unreachable; newer lines are dropped beyond this (the oldest may be
 * in flight, and their offset must stay right). */
const MAX_BUFFERED_LINES = 10_000;

export class WandbLogger {
  readonly enabled: boolean;
  private readonly apiKey: string | null;
  private readonly baseUrl: string;
  /** @internal timings and hooks, shared with the runs */
  readonly settings: Required<Pick<WandbLoggerOptions, 'flushIntervalMs' | 'heartbeatMs' | 'requestTimeoutMs' | 'maxConsecutiveFailures' | 'defaultTagPrefix' | 'now' | 'log'>>;
  private readonly fetch: typeof fetch;
  private saidDisabled = false;

  constructor(options: WandbLoggerOptions = {}) {
    this.apiKey = options.apiKey || null;
    this.enabled = this.apiKey !== null;
    this.baseUrl = (options.baseUrl ?? DEFAULT_WANDB_BASE_URL).replace(/\/+$/, '');
    this.fetch = options.fetch ?? globalThis.fetch;
    this.settings = {
      log: options.log ?? (() => {}),
      flushIntervalMs: options.flushIntervalMs ?? 2000,
      heartbeatMs: options.heartbeatMs ?? 30_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxConsecutiveFailures: options.maxConsecutiveFailures ?? 5,
      defaultTagPrefix: options.defaultTagPrefix ?? 'openai',
      now: options.now ?? Date.now,
    };
  }

  static fromEnv(env: Record<string, string | undefined>, options: Omit<WandbLoggerOptions, 'apiKey' | 'baseUrl'> = {}): WandbLogger {
    return new WandbLogger({ ...options, ...wandbOptionsFromEnv(env) });
  }

  /**
   * The job's W&B runs, one per wandb integration. Returns at once: each run is created in the
   * background, and metrics logged meanwhile wait for it. A no-op when the job asks for no W&B,
   * when no key is configured, or when W&B cannot be reached.
   */
  startJob(job: WandbJobInfo): WandbJobLog {
    // Stored integrations passed the create-job schema (INTEGRATIONS_SCHEMA).
    const settings = ((job.integrations ?? []) as WandbIntegration[]).filter((i) => i.type === 'wandb').map((i) => i.wandb);
    if (settings.length === 0) return NO_OP_JOB_LOG;
    if (!this.enabled) {
      if (!this.saidDisabled) {
        this.saidDisabled = true;
        this.settings.log('W&B integration requested but WANDB_API_KEY is not set: metrics are not sent to Weights & Biases (said once)', { job: job.id });
      }
      return NO_OP_JOB_LOG;
    }
    // The run id is the job id, so two integrations naming the same project would be one run.
    const seen = new Set<string>();
    const runs = settings
      .filter((s) => {
        const key = `${s.entity ?? ''}/${s.project}`;
        return seen.has(key) ? false : (seen.add(key), true);
      })
      .map((s) => new WandbRun(this, this.upsertVariables(job, s)));
    return {
      started: Promise.all(runs.map((run) => run.created)).then((created) => created.filter(Boolean).length),
      log: (metrics) => runs.forEach((run) => run.log(metrics)),
      finish: async (outcome, summary) => {
        await Promise.all(runs.map((run) => run.finish(outcome, summary)));
      },
    };
  }

  private upsertVariables(job: WandbJobInfo, settings: WandbSettings): UpsertVariables {
    const prefix = this.settings.defaultTagPrefix;
    const tags = [...new Set([`${prefix}/finetune`, `${prefix}/${job.model}`, `${prefix}/${job.id}`, ...(settings.tags ?? [])])]
      .map((t) => t.slice(0, MAX_WANDB_TAG_LENGTH)) // a long base-model name must not make W&B refuse the run
      .filter(Boolean);
    // W&B keeps config values as {"value": …} per key.
    const config = Object.fromEntries(Object.entries(job.config ?? {}).map(([k, v]) => [k, { value: v }]));
    return {
      name: job.id,
      project: settings.project,
      entity: settings.entity ?? null,
      displayName: settings.name || job.id,
      tags,
      config: JSON.stringify(config),
    };
  }

  /** @internal POSTs JSON with the key's Basic auth; resolves to the parsed answer, rejects on failure. */
  async request(path: string, body: unknown): Promise<any> {
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.settings.requestTimeoutMs);
    try {
      const response = await this.fetch(this.baseUrl + path, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`api:${this.apiKey}`).toString('base64')}`,
          'content-type': 'application/json',
          'user-agent': 'tuneforge',
        },
        body: JSON.stringify(body),
        signal: timeout.signal,
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`HTTP ${response.status} ${text.slice(0, 200)}`);
      // file_stream answers are informational (rate limits); an unparsable one is not a failure.
      try {
        return text ? JSON.parse(text) : null;
      } catch {
        return null;
      }
    } catch (err) {
      if (timeout.signal.aborted) throw new Error(`no answer from W&B within ${this.settings.requestTimeoutMs} ms`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}

const errorText = (err: unknown) => String((err as Error)?.cause ?? (err as Error)?.message ?? err);

interface UpsertVariables {
  name: string;
  project: string;
  entity: string | null;
  displayName: string;
  tags: string[];
  config: string;
}

/** One W&B run: created first, then history lines batched and streamed in order, one post at a time. */
class WandbRun {
  /** Resolves to whether W&B created (or found) the run. */
  readonly created: Promise<boolean>;
  private readonly runId: string;
  /** The file_stream path, known once the run exists. */
  private endpoint: string | null = null;
  private readonly startedAt: number;
  private nextLine = 0;
  private nextStep = 0;
  private pending: string[] = [];
  private readonly summary: Record<string, unknown> = {};
  /** Posts run one after another so that offsets stay in order. */
  private queue: Promise<void>;
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private lastPostAt: number;
  private failures = 0;
  private stopped = false;
  private finished = false;
  private saidFull = false;

  constructor(
    private readonly logger: WandbLogger,
    variables: UpsertVariables,
  ) {
    this.runId = variables.name;
    this.startedAt = this.lastPostAt = logger.settings.now();
    // Timers are unref'd: a run whose job never finishes must not keep the process alive.
    this.heartbeat = setInterval(() => this.beat(), logger.settings.heartbeatMs).unref();
    this.created = this.create(variables);
    this.queue = this.created.then(() => {});
  }

  private async create(variables: UpsertVariables): Promise<boolean> {
    const where = { job: variables.name, project: variables.project, entity: variables.entity };
    try {
      const answer = await this.logger.request('/graphql', { query: UPSERT_BUCKET, variables });
      const bucket = answer?.data?.upsertBucket?.bucket;
      if (answer?.errors?.length || !bucket) {
        throw new Error(`upsertBucket answered ${JSON.stringify(answer?.errors ?? answer).slice(0, 300)}`);
      }
      const entity: unknown = bucket.project?.entity?.name ?? variables.entity;
      if (typeof entity !== 'string' || !entity) throw new Error('W&B did not say which entity the run belongs to');
      const project = typeof bucket.project?.name === 'string' ? bucket.project.name : variables.project;
      const run = typeof bucket.name === 'string' ? bucket.name : variables.name;
      this.endpoint = `/files/${[entity, project, run].map(encodeURIComponent).join('/')}/file_stream`;
      // A job resumed after a restart upserts the same run; its history continues after the last line.
      this.nextLine = Number.isInteger(bucket.historyLineCount) ? bucket.historyLineCount : 0;
      this.logger.settings.log('W&B run started', { ...where, entity, run });
      return true;
    } catch (err) {
      this.stop();
      this.logger.settings.log('W&B run could not be created: metrics of this job are not sent to W&B', { ...where, error: errorText(err) });
      return false;
    }
  }

  log(metrics: WandbMetrics): void {
    if (this.finished || this.stopped) return;
    const now = this.logger.settings.now();
    const step = typeof metrics.step === 'number' && Number.isFinite(metrics.step) ? metrics.step : this.nextStep;
    this.nextStep = step + 1;
    const values: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(metrics)) {
      // JSON has no NaN or Infinity; a non-finite loss shows in the job's own failure instead.
      if (key === 'step' || value === null || value === undefined || (typeof value === 'number' && !Number.isFinite(value))) continue;
      values[key] = value;
    }
    const line: Record<string, unknown> = { ...values };
    line._step = step;
    line._runtime = (now - this.startedAt) / 1000;
    line._timestamp = now / 1000;
    let text: string;
    try {
      text = JSON.stringify(line);
    } catch (err) {
      this.logger.settings.log('W&B: metrics that cannot be written as JSON are skipped', { run: this.runId, error: errorText(err) });
      return;
    }
    Object.assign(this.summary, values, { _step: step });
    if (this.pending.length >= MAX_BUFFERED_LINES) {
      if (!this.saidFull) this.logger.settings.log('W&B: too many unsent metrics lines; newer ones are dropped until W&B answers', { run: this.runId });
      this.saidFull = true;
      return;
    }
    this.pending.push(text);
    this.scheduleFlush();
  }

  /**
   * Sends what is pending, then the summary, then marks the run complete. Each of these is tried
   * until maxConsecutiveFailures posts in a row have failed, one flush interval apart, so it
   * settles within about maxConsecutiveFailures × (requestTimeoutMs + flushIntervalMs) at worst.
   */
  async finish(outcome: JobOutcome, extraSummary: Record<string, unknown> = {}): Promise<void> {
    if (this.finished) return this.queue;
    this.finished = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    clearInterval(this.heartbeat);
    let summary: string;
    try {
      summary = JSON.stringify({ ...this.summary, ...extraSummary, status: outcome });
    } catch {
      summary = JSON.stringify({ ...this.summary, status: outcome }); // the caller's extras were not JSON
    }
    this.enqueue(async () => {
      while (this.pending.length > 0 && !this.stopped) await this.untilSent(() => this.sendHistory());
      await this.untilSent(() => this.post({ files: { [SUMMARY_FILE]: { offset: 0, content: [summary] } } }, 'summary'));
      await this.untilSent(() => this.post({ complete: true, exitcode: outcome === 'succeeded' ? 0 : 1 }, 'finish'));
    });
    return this.queue;
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.finished || this.stopped) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.enqueue(() => this.sendHistory());
    }, this.logger.settings.flushIntervalMs).unref();
  }

  private enqueue(task: () => Promise<unknown>): void {
    this.queue = this.queue.then(task).then(
      () => {},
      () => {}, // posts catch their own errors; this only keeps the chain going
    );
  }

  /** Retries `send` one flush interval apart until it succeeds or the run stops. */
  private async untilSent(send: () => Promise<boolean>): Promise<void> {
    while (!this.stopped && !(await send())) {
      if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, this.logger.settings.flushIntervalMs));
    }
  }

  /** Sends up to MAX_LINES_PER_POST pending lines; true when W&B accepted them. On failure they
   * stay pending and go again, at the same offset, with the next flush. */
  private async sendHistory(): Promise<boolean> {
    if (this.pending.length === 0) return true;
    if (this.stopped) return false;
    const lines = this.pending.slice(0, MAX_LINES_PER_POST);
    const ok = await this.post({ files: { [HISTORY_FILE]: { offset: this.nextLine, content: lines } } }, 'history');
    if (ok) {
      this.pending.splice(0, lines.length);
      this.nextLine += lines.length;
    }
    if (this.pending.length > 0) this.scheduleFlush();
    return ok;
  }

  private beat(): void {
    if (this.stopped || this.finished) return;
    if (this.logger.settings.now() - this.lastPostAt < this.logger.settings.heartbeatMs) return;
    this.enqueue(() => this.post({ complete: false, failed: false }, 'heartbeat'));
  }

  private async post(body: unknown, what: string): Promise<boolean> {
    if (this.stopped || !this.endpoint) return false;
    try {
      await this.logger.request(this.endpoint, body);
      this.failures = 0;
      this.lastPostAt = this.logger.settings.now();
      return true;
    } catch (err) {
      this.failures++;
      const { log, maxConsecutiveFailures } = this.logger.settings;
      if (this.failures >= maxConsecutiveFailures) {
        this.stop();
        log('W&B unreachable: this run stops sending metrics (the job is not affected)', { run: this.runId, what, error: errorText(err) });
      } else {
        log('W&B post failed, will retry', { run: this.runId, what, error: errorText(err), failures: this.failures });
      }
      return false;
    }
  }

  private stop(): void {
    this.stopped = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    clearInterval(this.heartbeat);
  }
}
