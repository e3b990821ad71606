// Operating the service, outside OpenAI's API: `GET /health` for load balancers and orchestrators
// (no key needed; 503 when the database does not answer) and `GET /metrics` in Prometheus's text
// format (an admin key when keys are configured): HTTP request durations by route, jobs by status,
// and prom-client's process metrics.
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ApiError } from '../domain/errors.ts';
import { JOB_STATUSES } from '../domain/jobs.ts';
import { requireAdmin } from './auth.ts';
import type { ApiContext } from './context.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without an API key (health checks). */
    public?: boolean;
  }
}

export async function opsRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store } = ctx;
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

  app.addHook('onResponse', async (request, reply) => {
    // The route pattern, not the URL: ids would make a label value per job.
    const route = request.routeOptions.url ?? 'unmatched';
    requests.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
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
