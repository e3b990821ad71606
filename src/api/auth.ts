// Bearer keys → organization. Keys come from API_KEYS / ADMIN_API_KEYS ("key:org,…"). With no keys
// configured the server is a single local organization (and binds to loopback only, see server.ts).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Config } from '../config.ts';
import { ApiError } from '../domain/errors.ts';

export interface Caller {
  organization: string;
  admin: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller;
  }
}

const redact = (key: string) => (key.length <= 8 ? '*'.repeat(key.length) : `${key.slice(0, 3)}${'*'.repeat(Math.min(20, key.length - 7))}${key.slice(-4)}`);

export function registerAuth(app: FastifyInstance, config: Config) {
  // Callers are shared by the requests of a key: frozen, so that none can change another's.
  const byKey = new Map(config.apiKeys.map((k): [string, Caller] => [k.key, Object.freeze({ organization: k.organization, admin: k.admin })]));
  const open = byKey.size === 0;
  const local: Caller = Object.freeze({ organization: config.localOrganization, admin: true });
  app.decorateRequest('caller', null as unknown as Caller);
  // A callback hook, not an async one: it runs on every request, and a promise per hook costs (bench:api).
  app.addHook('onRequest', (request, _reply, done) => {
    request.caller = callerOf(request);
    done();
  });

  /** The key's organization; a 401 when the key is missing or unknown (a throw in a hook is its error). */
  function callerOf(request: FastifyRequest): Caller {
    if (open || request.routeOptions.config?.public) return local;
    const header = request.headers.authorization;
    const match = header ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    if (!match) {
      throw new ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        'invalid_request_error',
        null,
        'missing_api_key',
      );
    }
    const caller = byKey.get(match[1]);
    if (!caller) {
      throw new ApiError(401, `Incorrect API key provided: ${redact(match[1])}.`, 'invalid_request_error', null, 'invalid_api_key');
    }
    return caller;
  }
}

/** For admin-only endpoints (checkpoint permissions). */
export function requireAdmin(request: FastifyRequest) {
  if (!request.caller.admin) {
    throw new ApiError(
      403,
      'You have insufficient permissions for this operation: it requires an admin API key (ADMIN_API_KEYS).',
      'permission_error',
      null,
      'insufficient_permissions',
    );
  }
}
