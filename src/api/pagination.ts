// OpenAI list objects and the `after`/`limit` query parameters shared by list endpoints.
import type { IdPrefix } from '../domain/naming.ts';

export function listObject<T extends { id: string }>(data: T[], hasMore: boolean) {
  return {
    object: 'list' as const,
    data,
    first_id: data.length ? data[0].id : null,
    last_id: data.length ? data[data.length - 1].id : null,
    has_more: hasMore,
  };
}

/** What Fastify sends with a serialized object: for routes that send JSON they built themselves. */
export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

/** `listObject`'s JSON for items already serialized (`json` each). */
export function listJson(items: { id: string; json: string }[], hasMore: boolean): string {
  const { data, ...fields } = listObject(items, hasMore);
  return `{"data":[${data.map((item) => item.json).join(',')}],${JSON.stringify(fields).slice(1)}`;
}

/**
 * Querystring schema for `after` + `limit` (default and maximum per endpoint) and the endpoint's
 * `extra` keys; any other key is a 400 `unknown_parameter` naming it. `after` must be an id of the
 * listed objects (`idPrefix` and base62, as newId makes them): anything else is a 400 naming
 * `after`, not an empty page.
 */
export function pageQuerySchema(idPrefix: IdPrefix, defaultLimit: number, maxLimit: number, extra: Record<string, unknown> = {}) {
  return {
    type: 'object',
    properties: {
      after: { type: 'string', pattern: `^${idPrefix}[0-9A-Za-z]+$` },
      limit: { type: 'integer', minimum: 1, maximum: maxLimit, default: defaultLimit },
      ...extra,
    },
    additionalProperties: false,
  } as const;
}

export interface PageQuery {
  after?: string;
  limit: number;
}
