// Service configuration, read once from the environment. Everything else receives a Config value,
// so tests build one with `loadConfig({ ...overrides })` instead of touching process.env.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv } from 'ajv';
import { TRAINING_OPTIONS_SCHEMA, type TrainingOptionsRequest } from './domain/training-options.ts';
import { parseWebhookEndpoints, type WebhookEndpoint } from './integrations/webhooks.ts';
import { wandbOptionsFromEnv } from './integrations/wandb.ts';

export interface ApiKey {
  key: string;
  organization: string;
  admin: boolean;
}

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  /** PostgreSQL for the rows (DATABASE_URL); null: SQLite under dataDir. */
  databaseUrl: string | null;
  /** Where blobs live (BLOB_STORE): null for dataDir/blobs, or `s3://bucket/prefix`. */
  blobStore: string | null;
  /** The bucket's server and keys (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). */
  s3: {
    endpoint: string | null;
    region: string;
    /** null: the AWS SDK's default chain (a profile, an instance or pod role). */
    credentials: { accessKeyId: string; secretAccessKey: string } | null;
  };
  /** Local copies of blobs for the engine (BLOB_CACHE_DIR, default dataDir/cache; BLOB_CACHE_MAX_BYTES). */
  blobCache: { dir: string; maxBytes: number };
  modelsDir: string;
  /** Empty: no keys configured, one local organization, loopback only. */
  apiKeys: ApiKey[];
  /** Organization used when no keys are configured. */
  localOrganization: string;
  limits: {
    jsonBodyBytes: number;
    fileBytes: number;
    uploadBytes: number;
    uploadPartBytes: number;
    uploadExpirySeconds: number;
    maxRunningJobsPerOrg: number;
    /** Jobs an organization may create in any 24 hours; 0: no limit. */
    maxJobsPerOrgPerDay: number;
  };
  queue: {
    leaseMs: number;
    heartbeatMs: number;
    pollMs: number;
  };
  training: {
    /** A resumable state every N optimizer steps (CHECKPOINT_EVERY_STEPS; 0 = only at epoch ends). */
    checkpointEverySteps: number;
    /** Run `train()` in the worker's own process instead of a child process (TRAIN_IN_PROCESS=1; tests, debugging). */
    inProcess: boolean;
    /** Extra Node flags for the training process (TRAIN_NODE_OPTIONS, e.g. --max-old-space-size=16384). */
    nodeArgs: string[];
    /** `serve` trains jobs itself (EMBEDDED_WORKER, default on); off: only `worker` processes do. */
    embeddedWorker: boolean;
    /**
     * Most memory a job's training may use (TRAIN_MEMORY_LIMIT_MB; default: this machine's or
     * container's memory less a margin; 0 = no check): a job estimated to need more fails at once
     * with insufficient_memory.
     */
    memoryLimitMb: number;
    /** Per-layer activation recomputation (TRAIN_RECOMPUTE: on = every layer, off, or auto = the fewest layers with which a job fits). */
    recompute: 'on' | 'off' | 'auto';
    /** The server's defaults for the per-job training options (TRAINING_DEFAULTS, JSON with the API's keys). */
    defaults: TrainingOptionsRequest;
  };
  /**
   * What a worker states it can hold, for capacity-aware claims: memory = TRAIN_MEMORY_LIMIT_MB's
   * (when that is 0, the machine's or container's), cores = WORKER_CORES (default: the CPUs this
   * process may use).
   */
  worker: { memoryBytes: number; cores: number };
  /** How often the server removes expired files and uploads (FILE_SWEEP_INTERVAL_SECONDS; 0 = never). */
  fileSweepIntervalSeconds: number;
  /** Endpoints for fine_tuning.job.* webhooks (WEBHOOK_URLS, WEBHOOK_SECRET). */
  webhooks: WebhookEndpoint[];
  /** Weights & Biases (WANDB_API_KEY, WANDB_BASE_URL); no key: jobs asking for W&B log nothing there. */
  wandb: { apiKey: string | null; baseUrl: string };
  logLevel: string;
}

const MB = 1024 * 1024;

/** Parses `key:org,key:org` (whitespace tolerated). */
export function parseKeyList(value: string | undefined, admin: boolean): ApiKey[] {
  if (!value) return [];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((pair) => {
      const at = pair.lastIndexOf(':');
      if (at <= 0 || at === pair.length - 1) throw new Error(`Bad API key entry '${pair}': expected key:org`);
      return { key: pair.slice(0, at), organization: pair.slice(at + 1), admin };
    });
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[], fallback: T): T {
  const raw = (env[name] ?? '').trim();
  if (raw === '') return fallback;
  if (!allowed.includes(raw as T)) throw new Error(`${name} must be one of ${allowed.join(', ')}, got '${raw}'`);
  return raw as T;
}

function intFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got '${raw}'`);
  return n;
}

/** BLOB_STORE: empty for the local folder, or `s3://bucket` with an optional `/prefix`. */
function blobStoreFrom(env: NodeJS.ProcessEnv): string | null {
  const raw = (env.BLOB_STORE ?? '').trim();
  if (raw === '') return null;
  if (!/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/[A-Za-z0-9_-]+)*\/?$/.test(raw)) {
    throw new Error(`BLOB_STORE must be s3://bucket or s3://bucket/prefix (prefix segments of letters, digits, _ and -), got '${raw}'`);
  }
  return raw.replace(/\/$/, '');
}

/** TRAINING_DEFAULTS: a JSON object of training options, checked as a create-job request's are. */
function trainingDefaultsFrom(env: NodeJS.ProcessEnv): TrainingOptionsRequest {
  const raw = (env.TRAINING_DEFAULTS ?? '').trim();
  if (raw === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Error(`TRAINING_DEFAULTS must be a JSON object, got '${raw}'`);
  }
  const validate = new Ajv({ allErrors: true }).compile({ type: 'object', properties: TRAINING_OPTIONS_SCHEMA, additionalProperties: false });
  if (!validate(value)) {
    const errors = validate.errors!.map((e) => `${e.instancePath || '/'} ${e.message}${e.keyword === 'additionalProperties' ? ` (${e.params.additionalProperty})` : ''}`);
    throw new Error(`TRAINING_DEFAULTS: ${errors.join('; ')}`);
  }
  return value as TrainingOptionsRequest;
}

/** The machine's memory, or the container's limit when lower (cgroup v2, then v1). */
export function availableMemoryBytes(): number {
  let limit = os.totalmem();
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    try {
      const value = Number(fs.readFileSync(file, 'utf8').trim()); // 'max' (no limit) reads as NaN
      if (Number.isFinite(value) && value > 0) limit = Math.min(limit, value);
    } catch {
      // not in a cgroup of that version
    }
  }
  return limit;
}

/** Available memory less room for the server and the system: 10%, at least 1 GB. */
function defaultTrainMemoryLimitMb(): number {
  const available = availableMemoryBytes();
  return Math.max(0, Math.floor((available - Math.max(1024 * MB, 0.1 * available)) / MB));
}

export function loadConfig(overrides: Partial<Config> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const apiKeys = [...parseKeyList(env.API_KEYS, false), ...parseKeyList(env.ADMIN_API_KEYS, true)];
  const memoryLimitMb = intFrom(env, 'TRAIN_MEMORY_LIMIT_MB', defaultTrainMemoryLimitMb());
  // The cache defaults to the DATA_DIR in use, an overridden one too (tests give each host its own).
  const dataDir = overrides.dataDir ?? path.resolve(env.DATA_DIR || './data');
  const base: Config = {
    host: env.HOST || '127.0.0.1',
    port: intFrom(env, 'PORT', 8000),
    dataDir,
    databaseUrl: env.DATABASE_URL || null,
    blobStore: blobStoreFrom(env),
    s3: {
      endpoint: env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || null,
      region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
      credentials: env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY } : null,
    },
    blobCache: {
      dir: env.BLOB_CACHE_DIR ? path.resolve(env.BLOB_CACHE_DIR) : path.join(dataDir, 'cache'),
      maxBytes: intFrom(env, 'BLOB_CACHE_MAX_BYTES', 20 * 1024 * MB),
    },
    modelsDir: path.resolve(env.MODELS_DIR || './models'),
    apiKeys,
    localOrganization: env.LOCAL_ORGANIZATION || 'org-local',
    limits: {
      jsonBodyBytes: intFrom(env, 'MAX_JSON_BODY_BYTES', 1 * MB),
      fileBytes: intFrom(env, 'MAX_FILE_BYTES', 512 * MB),
      uploadBytes: intFrom(env, 'MAX_UPLOAD_BYTES', 8 * 1024 * MB),
      uploadPartBytes: intFrom(env, 'MAX_UPLOAD_PART_BYTES', 64 * MB),
      uploadExpirySeconds: intFrom(env, 'UPLOAD_EXPIRY_SECONDS', 3600),
      maxRunningJobsPerOrg: intFrom(env, 'MAX_RUNNING_JOBS_PER_ORG', 2),
      maxJobsPerOrgPerDay: intFrom(env, 'MAX_JOBS_PER_DAY_PER_ORG', 0),
    },
    queue: {
      leaseMs: intFrom(env, 'JOB_LEASE_MS', 30_000),
      heartbeatMs: intFrom(env, 'JOB_HEARTBEAT_MS', 2_000),
      pollMs: intFrom(env, 'JOB_POLL_MS', 1_000),
    },
    training: {
      checkpointEverySteps: intFrom(env, 'CHECKPOINT_EVERY_STEPS', 10),
      inProcess: env.TRAIN_IN_PROCESS === '1' || env.TRAIN_IN_PROCESS === 'true',
      nodeArgs: (env.TRAIN_NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean),
      embeddedWorker: !['0', 'false', 'no', 'off'].includes((env.EMBEDDED_WORKER ?? '').trim().toLowerCase()),
      memoryLimitMb,
      recompute: oneOf(env, 'TRAIN_RECOMPUTE', ['on', 'off', 'auto'] as const, 'auto'),
      defaults: trainingDefaultsFrom(env),
    },
    worker: {
      memoryBytes: memoryLimitMb > 0 ? memoryLimitMb * MB : availableMemoryBytes(),
      cores: intFrom(env, 'WORKER_CORES', os.availableParallelism()),
    },
    fileSweepIntervalSeconds: intFrom(env, 'FILE_SWEEP_INTERVAL_SECONDS', 300),
    webhooks: parseWebhookEndpoints(env),
    wandb: (() => {
      const { apiKey, baseUrl } = wandbOptionsFromEnv(env);
      return { apiKey: apiKey ?? null, baseUrl: baseUrl! };
    })(),
    logLevel: env.LOG_LEVEL || 'info',
  };
  return {
    ...base,
    ...overrides,
    limits: { ...base.limits, ...overrides.limits },
    queue: { ...base.queue, ...overrides.queue },
    training: { ...base.training, ...overrides.training },
    worker: { ...base.worker, ...overrides.worker },
  };
}

/** With no keys configured the server is open, so it must not listen beyond this machine. */
export function isLoopback(host: string): boolean {
  return host === '127.0.0.1' || host === '::1' || host === 'localhost' || host.startsWith('127.');
}
