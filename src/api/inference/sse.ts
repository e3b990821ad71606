// Server-sent events for streamed completions, and what a request does when its client leaves.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../../domain/errors.ts';

/** Server-sent events: `data: {json}\n\n` per chunk, `data: [DONE]` at the end. */
export class EventStream {
  constructor(private readonly reply: FastifyReply) {
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
  }

  get open(): boolean {
    return !this.reply.raw.writableEnded && !this.reply.raw.destroyed;
  }

  send(data: unknown): void {
    if (this.open) this.reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** An error after the stream began: OpenAI's envelope as an event, then the end. */
  fail(error: unknown): void {
    const e = error instanceof ApiError ? error : new ApiError(500, 'The server had an error while processing your request.', 'server_error');
    this.send(e.toJSON());
    this.end();
  }

  end(): void {
    if (!this.open) return;
    this.reply.raw.write('data: [DONE]\n\n');
    this.reply.raw.end();
  }
}

/**
 * Aborts the request's generations when the client goes away before the response is complete
 * (and, called by the handler, when one of them failed and the rest are of no use).
 */
export function disconnectSignal(request: FastifyRequest, reply: FastifyReply): AbortController {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableEnded) controller.abort(Object.assign(new Error('client disconnected'), { name: 'AbortError' }));
  };
  reply.raw.once('close', onClose);
  request.raw.once('aborted', onClose);
  return controller;
}

/** The client is gone: Fastify stops waiting for a response, and the socket is let go. */
export function abandon(reply: FastifyReply): FastifyReply {
  reply.hijack();
  if (!reply.raw.destroyed) reply.raw.destroy();
  return reply;
}
