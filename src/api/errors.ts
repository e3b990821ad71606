// Every failure leaves the server in OpenAI's envelope {"error":{message,type,param,code}}:
// domain ApiErrors, Fastify's own (schema validation, 404, 413, malformed JSON and URLs, multipart
// limits), Node's HTTP parser's (headers too large, not HTTP) and anything unexpected (500, logged).
// Client mistakes keep their 4xx status; only our bugs are 5xx.
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, type ErrorType } from '../domain/errors.ts';
import { ModelNotFoundError } from '../models/catalogue.ts';
import { BlobTooLargeError } from '../store/index.ts';

interface AjvErrorLike {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, any>;
}

/** PostgreSQL's SQLSTATE for a NUL byte in text. */
const PG_CHARACTER_NOT_IN_REPERTOIRE = '22021';

const TYPE_BY_STATUS: Record<number, ErrorType> = {
  401: 'invalid_request_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  429: 'rate_limit_error',
};

/** The param an error is about, as OpenAI writes it: `messages[0].content`. */
function paramOf(err: AjvErrorLike): string | null {
  const path = err.instancePath
    .split('/')
    .filter(Boolean)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (err.keyword === 'required') path.push(err.params.missingProperty);
  if (err.keyword === 'additionalProperties') path.push(err.params.additionalProperty);
  return path.reduce<string | null>((param, key) => (/^\d+$/.test(key) && param !== null ? `${param}[${key}]` : param === null ? key : `${param}.${key}`), null);
}

const UNIONS = new Set(['oneOf', 'anyOf']);
const A_TYPE: Record<string, string> = { integer: 'an integer', number: 'a number', string: 'a string', boolean: 'a boolean', object: 'an object', array: 'an array' };

/**
 * The error to report. Ajv stops at the first failing keyword, listing before it the first error of
 * each branch it tried (an if/then: the branch's; a oneOf/anyOf: every branch's). A value that fits
 * none of a union's forms is reported at the union, by the branch that got furthest: one that
 * failed on a rule (too many items) rather than on its type.
 */
function reported(errors: AjvErrorLike[]): AjvErrorLike {
  const trimmed = errors.filter((e) => e.keyword !== 'if');
  const last = trimmed[trimmed.length - 1];
  if (!last || !UNIONS.has(last.keyword)) return trimmed[0] ?? errors[0];
  const inside = trimmed.slice(0, -1).filter((e) => e.instancePath.startsWith(last.instancePath));
  const atUnion = inside.filter((e) => e.instancePath === last.instancePath && !UNIONS.has(e.keyword));
  const rule = atUnion.find((e) => e.keyword !== 'type');
  if (rule) return rule;
  if (atUnion.length === inside.length) {
    const types = [...new Set(atUnion.flatMap((e) => String(e.params.type).split(',')))];
    return { keyword: 'type', instancePath: last.instancePath, params: { type: types.join(',') } };
  }
  // Its type fits a form, its contents do not: no one branch's complaint is the right one.
  return { ...last, message: 'it fits none of the forms this parameter takes' };
}

/** An Ajv error as an OpenAI-style 400 (codes as OpenAI's: missing_required_parameter, unknown_parameter, invalid_type, invalid_value). */
export function validationError(errors: AjvErrorLike[]): ApiError {
  const first = reported(errors);
  const param = paramOf(first);
  let message: string;
  let code = 'invalid_value';
  if (first.keyword === 'required') [message, code] = [`Missing required parameter: '${param}'.`, 'missing_required_parameter'];
  else if (first.keyword === 'additionalProperties') [message, code] = [`Unrecognized request argument supplied: ${param}`, 'unknown_parameter'];
  else if (param === null) message = `Invalid request: ${first.message ?? 'invalid value'} (expected a JSON object body).`;
  else if (first.keyword === 'enum') message = `Invalid value for '${param}': expected one of ${first.params.allowedValues.map((v: unknown) => `'${v}'`).join(', ')}.`;
  else if (first.keyword === 'type') {
    const expected = String(first.params.type).split(',').filter((t) => t !== 'null').map((t) => A_TYPE[t] ?? t);
    [message, code] = [`Invalid type for '${param}': expected ${expected.join(' or ')}.`, 'invalid_type'];
  } else message = `Invalid '${param}': ${first.message ?? 'invalid value'}.`;
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

export function toApiError(error: unknown): ApiError | null {
  if (error instanceof ApiError) return error;
  // PostgreSQL refusing a NUL character that reached a query by another way (a model name in a
  // chat request, say): the request's text, not our bug.
  if ((error as { code?: unknown })?.code === PG_CHARACTER_NOT_IN_REPERTOIRE) {
    return new ApiError(400, 'Invalid request: text must not contain NUL characters (\\u0000).', 'invalid_request_error', null, 'invalid_value');
  }
  if (error instanceof ModelNotFoundError) return new ApiError(404, error.message, 'invalid_request_error', 'model', 'model_not_found');
  if (error instanceof BlobTooLargeError) {
    return new ApiError(413, `File is too large: the limit is ${error.limit} bytes.`, 'invalid_request_error', null, 'file_too_large');
  }
  const e = error as FastifyError & { validation?: AjvErrorLike[] };
  if (e && Array.isArray(e.validation) && e.validation.length > 0) return validationError(e.validation);
  switch (e?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'Request body is too large.', 'invalid_request_error', null, 'request_too_large');
    case 'FST_REQ_FILE_TOO_LARGE':
      return new ApiError(413, 'File is too large.', 'invalid_request_error', null, 'file_too_large');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError(400, `We could not parse the JSON body of your request: ${e.message}`, 'invalid_request_error', null, 'invalid_json');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, `Unsupported Content-Type: ${e.message}`, 'invalid_request_error', null, 'unsupported_media_type');
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new ApiError(400, 'This endpoint expects a multipart/form-data body.', 'invalid_request_error', null, 'invalid_content_type');
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new ApiError(413, `The multipart body has too many parts (${e.message}): send one file and the documented fields.`, 'invalid_request_error', null, 'too_many_parts');
    case 'FST_ERR_BAD_URL':
      return new ApiError(400, `Invalid URL: ${e.message}.`, 'invalid_request_error', null, 'invalid_url');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new ApiError(414, 'Invalid URL: a path parameter is longer than any id or model name.', 'invalid_request_error', null, 'url_too_long');
  }
  const status = typeof e?.statusCode === 'number' ? e.statusCode : 500;
  if (status >= 400 && status < 500) {
    return new ApiError(status, e.message, TYPE_BY_STATUS[status] ?? 'invalid_request_error', null, null);
  }
  return null;
}

/** The dotted path of the first string holding a NUL character in `value` ('' for `value` itself), or null. */
function nulPath(value: unknown, path = ''): string | null {
  if (typeof value === 'string') return value.includes('\u0000') ? path : null;
  if (value === null || typeof value !== 'object') return null;
  for (const [key, item] of Object.entries(value)) {
    const found = nulPath(item, path ? `${path}.${key}` : key);
    if (found !== null) return found;
  }
  return null;
}

/** Routes whose bodies carry model text (prompts, stop strings, samples), where a NUL is data. */
const FREE_TEXT_ROUTES = ['/v1/chat/completions', '/v1/completions', '/v1/fine_tuning/alpha/graders/'];

/**
 * No id, name or stored value of this API needs a NUL character (U+0000), and PostgreSQL text cannot
 * hold one: a request with one in its path, query or JSON body (but model text) is a 400 naming
 * where, on every backend.
 */
export function rejectNulCharacters(app: FastifyInstance) {
  // A callback hook, not an async one: it runs on every request (bench:api).
  app.addHook('preValidation', (request, _reply, done) => {
    // Node's HTTP parser refuses a raw NUL in a URL: one reaches the path or query only as %00.
    const inUrl = request.url.includes('%00');
    const body = request.body;
    const bodyToCheck = body !== undefined && body !== null && !FREE_TEXT_ROUTES.some((prefix) => (request.routeOptions.url ?? '').startsWith(prefix));
    for (const part of [inUrl && request.params, inUrl && request.query, bodyToCheck && body]) {
      const param = nulPath(part);
      if (param !== null) {
        throw new ApiError(400, `Invalid '${param}': text must not contain NUL characters (\\u0000).`, 'invalid_request_error', param || null, 'invalid_value');
      }
    }
    done();
  });
}

/**
 * The error handler, and Fastify's `frameworkErrors` option (a URL it cannot route: malformed
 * percent-encoding, a path parameter over maxParamLength).
 */
export function sendError(error: unknown, request: FastifyRequest, reply: FastifyReply) {
  const apiError = toApiError(error);
  if (apiError) return reply.status(apiError.status).send(apiError.toJSON());
  request.log.error({ err: error }, 'unhandled error');
  const internal = new ApiError(500, 'The server had an error while processing your request.', 'server_error');
  return reply.status(500).send(internal.toJSON());
}

/**
 * Fastify's `clientErrorHandler` option: Node's HTTP parser refused the request before Fastify saw
 * it (headers too large, not HTTP, a body shorter than its Content-Length), so the answer is written
 * to the socket, which then closes.
 */
export function sendClientError(error: NodeJS.ErrnoException, socket: Duplex) {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const apiError =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? new ApiError(431, 'The request headers are too large.', 'invalid_request_error', null, 'headers_too_large')
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new ApiError(408, 'The request did not arrive in time.', 'invalid_request_error', null, 'request_timeout')
        : new ApiError(400, 'The request is not valid HTTP/1.1.', 'invalid_request_error', null, 'invalid_http_request');
  const body = JSON.stringify(apiError.toJSON());
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${apiError.status} ${STATUS_CODES[apiError.status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}

export function registerErrorHandling(app: FastifyInstance) {
  app.setErrorHandler(sendError);
  app.setNotFoundHandler((request, reply) => {
    const err = new ApiError(404, `Invalid URL (${request.method} ${request.url.split('?')[0]})`, 'invalid_request_error', null, 'unknown_url');
    return reply.status(404).send(err.toJSON());
  });
}
