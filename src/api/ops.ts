// Operating the service, outside OpenAI's API: `GET /health` for load balancers and orchestrators
// (no key needed; 503 when the database does not answer) and `GET /metrics` in Prometheus's text
// format (an admin key when keys are configured): HTTP request durations by route, jobs by status
// (the queue's depth per state), each worker's running jobs, capacity and heartbeat age, queued jobs
// no live worker can hold, and prom-client's process metrics.
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ApiError } from '../domain/errors.ts';
import { JOB_STATUSES } from '../domain/job-status.ts';
import { requireAdmin } from './auth.ts';
import type { ApiContext } from './context.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without an API key (health checks). */
    public?: boolean;
  }
}

export async function opsRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store, config } = ctx;
  // A registry per server: tests and embedders may run several in one process.
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tuneforge_' });
  const requests = new Histogram({
    name: 'tuneforge_http_request_duration_seconds',
    help: 'HTTP requests by method, route pattern and status code',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });
  new Gauge({
    name: 'tuneforge_jobs',
    help: 'Fine-tuning jobs by status',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      const counts = await store.jobs.countByStatus();
      for (const status of JOB_STATUSES) this.set({ status }, counts[status] ?? 0);
    },
  });

  // Per worker: the registered ones, and any other still holding a running job (one killed and
  // forgotten, or of an older version). Labels carry its id and host.
  const perWorker = async () => {
    const [workers, running] = await Promise.all([store.workers.list(), store.jobs.countRunningByWorker()]);
    const known = new Set(workers.map((w) => w.id));
    const unregistered = Object.keys(running).filter((id) => !known.has(id)).map((id) => ({ id, host: '' }));
    return { running, all: [...workers, ...unregistered] };
  };
  const workerLabels = ['worker', 'host'] as const;
  new Gauge({
    name: 'tuneforge_worker_running_jobs',
    help: 'Jobs running on each worker',
    labelNames: workerLabels,
    registers: [registry],
    async collect() {
      const { running, all } = await perWorker();
      this.reset();
      for (const w of all) this.set({ worker: w.id, host: w.host }, running[w.id] ?? 0);
    },
  });
  new Gauge({
    name: 'tuneforge_worker_memory_bytes',
    help: 'Most memory a job may use on each registered worker (what claims compare a job’s need with)',
    labelNames: workerLabels,
    registers: [registry],
    async collect() {
      this.reset();
      for (const w of await store.workers.list()) this.set({ worker: w.id, host: w.host }, w.memory_bytes);
    },
  });
  new Gauge({
    name: 'tuneforge_worker_cores',
    help: 'CPU cores of each registered worker',
    labelNames: workerLabels,
    registers: [registry],
    async collect() {
      this.reset();
      for (const w of await store.workers.list()) this.set({ worker: w.id, host: w.host }, w.cores);
    },
  });
  new Gauge({
    name: 'tuneforge_worker_heartbeat_age_seconds',
    help: `Seconds since each registered worker's last heartbeat (live while under the job lease, ${config.queue.leaseMs / 1000} s)`,
    labelNames: workerLabels,
    registers: [registry],
    async collect() {
      this.reset();
      const now = Date.now();
      for (const w of await store.workers.list()) this.set({ worker: w.id, host: w.host }, Math.max(0, now - w.heartbeat_at_ms) / 1000);
    },
  });
  new Gauge({
    name: 'tuneforge_jobs_queued_beyond_capacity',
    help: 'Queued jobs needing more memory than any live worker has: they wait for a bigger one',
    registers: [registry],
    async collect() {
      const largest = await store.workers.largestLiveMemory(Date.now() - config.queue.leaseMs);
      this.set(largest === null ? 0 : (await store.jobs.queuedNeedingMoreThan(largest)).length);
    },
  });

  // A callback hook, not an async one: it runs on every request (bench:api).
  app.addHook('onResponse', (request, reply, done) => {
    // The route pattern, not the URL: ids would make a label value per job.
    const route = request.routeOptions.url ?? 'unmatched';
    requests.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    done();
  });

  app.get('/health', { config: { public: true } }, async (_request, reply) => {
    try {
      await sql`select 1`.execute(store.db);
    } catch {
      throw new ApiError(503, 'The database does not answer.', 'server_error', null, 'database_unavailable');
    }
    return reply.send({ status: 'ok' });
  });

  app.get('/metrics', async (request, reply) => {
    requireAdmin(request);
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
