// The HTTP server: a Fastify app with OpenAI's routes under /v1, and `startServer`, which also
// runs the embedded worker when a job runner (the training engine) is supplied, and the expired-file sweep.
import Fastify, { type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import { isLoopback, type Config } from '../config.ts';
import { validateDataset } from '../domain/datasets.ts';
import { validateJobFiles, type DatasetValidator } from '../scheduler/file-validation.ts';
import { Worker, type JobFinishedListener, type JobRunner } from '../scheduler/worker.ts';
import { WebhookDispatcher } from '../integrations/webhooks.ts';
import { startExpirySweeper } from '../store/expiry.ts';
import { openStore, type Store } from '../store/index.ts';
import { registerAuth } from './auth.ts';
import { nowSeconds } from '../domain/clock.ts';
import type { ApiContext } from './context.ts';
import { registerErrorHandling, rejectNulCharacters, sendClientError, sendError } from './errors.ts';
import { jsonAjv, textAjv } from './schemas.ts';
import { opsRoutes } from './ops.ts';
import { dashboardRoutes } from './dashboard.ts';
import { exportRoutes } from './export.ts';
import { fileRoutes } from './files.ts';
import { inferenceRoutes } from './inference/index.ts';
import { InferenceService } from './inference/service.ts';
import { ModelCatalogue } from '../models/catalogue.ts';
import { checkpointRoutes } from './fine-tuning/checkpoints.ts';
import { graderRoutes, type GraderRouteOptions } from './fine-tuning/graders.ts';
import { jobRoutes } from './fine-tuning/jobs.ts';
import { modelRoutes } from './models.ts';
import { uploadRoutes } from './uploads.ts';

export interface AppOptions {
  /** An open store; when absent the app opens one under config.dataDir and closes it with the app. */
  store?: Store;
  /** Dataset rules; the datasets module's by default. */
  validateDataset?: DatasetValidator;
  /** Fastify logger setting; defaults to pino at config.logLevel. */
  logger?: boolean | { level: string };
  /** Called when a job leaves file validation for the queue (the embedded worker wakes up). */
  onJobQueued?: (jobId: string) => void;
  /** Called when a job ends; by default fine_tuning.job.* webhooks go to config.webhooks. */
  onJobFinished?: JobFinishedListener;
  /** Grader models and python sandbox settings for /fine_tuning/alpha/graders (tests). */
  graders?: GraderRouteOptions;
  /** The clock (Unix seconds) for file expiry, in the store the app opens and in the sweep (tests). */
  now?: () => number;
}

declare module 'fastify' {
  interface FastifyInstance {
    store: Store;
    /** Reports a job's end (webhooks); the embedded worker reports through it too. */
    onJobFinished: JobFinishedListener;
  }
}

export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const ownsStore = !options.store;
  const store = options.store ?? (await openStore(config, { now: options.now }));
  const validate = options.validateDataset ?? (validateDataset as DatasetValidator);

  const app = Fastify({
    logger: options.logger ?? { level: config.logLevel },
    bodyLimit: config.limits.jsonBodyBytes,
    routerOptions: { maxParamLength: 1000 }, // fine-tuned model and checkpoint names are long
    // What Fastify and Node's HTTP parser refuse before any route runs: OpenAI's envelope too.
    frameworkErrors: sendError,
    clientErrorHandler: sendClientError,
  });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? jsonAjv : textAjv).compile(schema));
  // An empty JSON body (curl -X POST -H 'content-type: application/json' …/cancel) means "no body",
  // not malformed JSON; anything else goes through Fastify's own (prototype-poisoning-safe) parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body.toString();
    if (text === '') return done(null, undefined);
    return parseJson(request, text, done);
  });
  app.decorate('store', store);
  app.decorate('onJobFinished', (jobId: string, status: 'succeeded' | 'failed' | 'cancelled') => ctx.onJobFinished(jobId, status));
  if (ownsStore) app.addHook('onClose', async () => store.close());

  let onJobFinished = options.onJobFinished;
  if (!onJobFinished) {
    const webhooks = new WebhookDispatcher({ endpoints: config.webhooks, log: (msg, extra) => app.log.warn(extra ?? {}, msg) });
    onJobFinished = webhookListener(webhooks);
    app.addHook('onClose', async () => webhooks.close());
  }
  const pending = new Set<Promise<void>>();
  const ctx: ApiContext = {
    config,
    store,
    catalogue: new ModelCatalogue(store, config.modelsDir),
    onJobFinished,
    startFileValidation(jobId) {
      const run = validateJobFiles(store, validate, jobId)
        .then(async () => {
          const job = await store.jobs.get(jobId);
          if (job?.status === 'queued') options.onJobQueued?.(jobId);
          if (job?.status === 'failed') ctx.onJobFinished(jobId, 'failed');
        })
        .catch((err) => app.log.error({ err, jobId }, 'file validation crashed'))
        .finally(() => pending.delete(run));
      pending.add(run);
    },
  };
  // Background validations finish before the store closes.
  app.addHook('preClose', async () => {
    await Promise.allSettled([...pending]);
  });

  registerErrorHandling(app);
  rejectNulCharacters(app);
  registerAuth(app, config);
  await opsRoutes(app, ctx); // /health, /metrics; its request timing hook covers every route
  // One inference service (worker thread, loaded models) for completions and grader models.
  const inference = new InferenceService(ctx.catalogue);
  await app.register(
    async (v1) => {
      // Multipart bodies only where a route takes a form (file uploads): the plugin hooks every
      // request of its scope, and elsewhere such a body is a 415 like any other unsupported type.
      await v1.register(async (forms) => {
        await forms.register(multipart, {
          limits: { fileSize: config.limits.fileBytes, files: 1, fields: 20, fieldSize: 64 * 1024, parts: 25 },
        });
        await fileRoutes(forms, ctx);
        await uploadRoutes(forms, ctx);
      });
      await jobRoutes(v1, ctx);
      await checkpointRoutes(v1, ctx);
      await graderRoutes(v1, ctx, inference, options.graders);
      await modelRoutes(v1, ctx);
      await inferenceRoutes(v1, inference); // /chat/completions, /completions
      await exportRoutes(v1, ctx);
    },
    { prefix: '/v1' },
  );
  await dashboardRoutes(app); // the web dashboard at /, a client of the routes above

  // Jobs a previous process left validating (it stopped mid-way) are validated again.
  for (const job of await store.jobs.listByStatus('validating_files')) ctx.startFileValidation(job.id);
  return app;
}

/** fine_tuning.job.succeeded | failed | cancelled to every configured endpoint (fire and forget). */
export function webhookListener(webhooks: WebhookDispatcher): JobFinishedListener {
  return (jobId, status) => {
    if (webhooks.enabled) void webhooks.dispatch(`fine_tuning.job.${status}`, jobId);
  };
}

export interface ServerOptions extends AppOptions {
  /**
   * Runs queued jobs in an embedded worker. Without a runner no worker starts and jobs stay
   * `queued` until a `worker` process with a trainer picks them up.
   */
  runJob?: JobRunner;
}

export interface RunningServer {
  url: string;
  app: FastifyInstance;
  store: Store;
  worker: Worker | null;
  close(): Promise<void>;
}

export async function startServer(config: Config, options: ServerOptions = {}): Promise<RunningServer> {
  if (config.apiKeys.length === 0 && !isLoopback(config.host)) {
    throw new Error(`No API keys configured (API_KEYS): refusing to listen on ${config.host}; set API_KEYS or HOST=127.0.0.1.`);
  }
  let worker: Worker | null = null;
  const app = await buildApp(config, { ...options, onJobQueued: () => worker?.poke() });
  if (options.runJob) {
    worker = new Worker({
      store: app.store,
      runJob: options.runJob,
      dataDir: config.dataDir,
      leaseMs: config.queue.leaseMs,
      heartbeatMs: config.queue.heartbeatMs,
      pollMs: config.queue.pollMs,
      maxRunningPerOrg: config.limits.maxRunningJobsPerOrg,
      capacity: config.worker,
      log: (msg, extra) => app.log.info(extra ?? {}, msg),
      onJobFinished: app.onJobFinished,
    });
  }
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  worker?.start();
  const sweeper = startExpirySweeper(app.store, {
    intervalSeconds: config.fileSweepIntervalSeconds,
    now: options.now ?? nowSeconds,
    log: app.log,
  });
  return {
    url: `http://${host}:${port}`,
    app,
    store: app.store,
    worker,
    async close() {
      await worker?.stop();
      await sweeper.stop();
      await app.close();
    },
  };
}
