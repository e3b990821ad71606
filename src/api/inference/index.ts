// The inference routes: /chat/completions and /completions (under /v1) over the server's
// inference service (the one the graders' score_model / label_model use too), closed with the server.
import type { FastifyInstance } from 'fastify';
import { chatCompletionRoutes } from '../chat-completions.ts';
import { completionRoutes } from '../completions.ts';
import type { InferenceService } from './service.ts';

export async function inferenceRoutes(app: FastifyInstance, service: InferenceService) {
  // Before the server waits for open connections: streams in flight end (with an error event)
  // instead of holding shutdown up until they finish.
  app.addHook('preClose', async () => service.close());
  await chatCompletionRoutes(app, service);
  await completionRoutes(app, service);
}
