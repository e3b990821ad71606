// Errors the domain raises; the API turns them into OpenAI's envelope
// {"error":{"message","type","param","code"}} with `status` as the HTTP status.

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 for a bad request parameter. */
export const invalidParam = (param: string, message: string, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** 404 for an id the caller cannot see (absent, or another organization's). */
export const notFound = (what: string, id: string, param: string | null = null) =>
  new ApiError(404, `No such ${what}: '${id}'`, 'invalid_request_error', param, `${what.replace(/ /g, '_')}_not_found`);
