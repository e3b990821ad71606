// Reads a multipart/form-data request: one file part, streamed to a handler as it arrives (never
// buffered whole), plus text fields, checked against a route's schema as a query string would be.
// The file may come before or after the fields.
import type { FastifyRequest } from 'fastify';
import type {} from '@fastify/multipart';
import type { Readable } from 'node:stream';
import { ApiError, invalidParam } from '../domain/errors.ts';
import { BlobTooLargeError } from '../store/index.ts';
import { validationError } from './errors.ts';
import { textAjv } from './schemas.ts';

/** The text fields a form takes: their names, and the check of their values (`expires_after[seconds]` nests as `expires_after.seconds`). */
export interface FormFields {
  names: string[];
  /** Throws a 400 naming the param when `fields` does not fit. */
  check(fields: Record<string, unknown>): void;
}

/** A form's text fields from an object schema of them (a route schema, as for a query string). */
export function formFields(schema: { properties: Record<string, unknown>; [keyword: string]: unknown }): FormFields {
  const validate = textAjv.compile(schema);
  return {
    names: Object.keys(schema.properties),
    check(fields) {
      if (!validate(fields)) throw validationError(validate.errors!);
    },
  };
}

export interface MultipartResult<T> {
  /** The text fields, nested as their names say and checked against the form's schema. */
  fields: Record<string, any>;
  file: { filename: string; mimetype: string; stored: T } | null;
}

/** Errors of the multipart parser itself (busboy): the client's body is broken, not our server. */
function isParserError(err: unknown): boolean {
  if (err instanceof ApiError || err instanceof BlobTooLargeError || !(err instanceof Error)) return false;
  const e = err as Error & { statusCode?: number; code?: string; syscall?: string };
  return e.statusCode === undefined && e.syscall === undefined && !(typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code));
}

export async function readMultipart<T>(
  request: FastifyRequest,
  fileField: string,
  form: FormFields | null,
  storeFile: (stream: Readable) => Promise<T>,
  discard: (stored: T) => Promise<void>,
): Promise<MultipartResult<T>> {
  if (!request.isMultipart()) {
    throw new ApiError(400, 'This endpoint expects a multipart/form-data body.', 'invalid_request_error', null, 'invalid_content_type');
  }
  const allowedFields = form?.names ?? [];
  const fields: Record<string, any> = {};
  let file: MultipartResult<T>['file'] = null;
  try {
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== fileField || file) {
          part.file.resume(); // drain, then reject
          throw invalidParam(part.fieldname, `Unexpected file field '${part.fieldname}'; expected one '${fileField}'.`);
        }
        const stored = await storeFile(part.file);
        file = { filename: part.filename, mimetype: part.mimetype, stored };
      } else {
        if (!allowedFields.some((f) => part.fieldname === f || part.fieldname.startsWith(`${f}[`))) {
          throw invalidParam(part.fieldname, `Unrecognized request argument supplied: ${part.fieldname}`);
        }
        // An unknown field fails before the file that may follow it is stored.
        setField(fields, part.fieldname, String(part.value));
      }
    }
  } catch (err) {
    if (file) await discard(file.stored);
    throw isParserError(err)
      ? new ApiError(400, `Malformed multipart/form-data body: ${(err as Error).message}`, 'invalid_request_error', null, 'invalid_multipart')
      : err;
  }
  try {
    form?.check(fields);
  } catch (err) {
    if (file) await discard(file.stored);
    throw err;
  }
  return { fields, file };
}

/** `a[b][c]` = v → fields.a.b.c = v (form fields name nested values so); a later value wins. */
function setField(fields: Record<string, any>, name: string, value: string) {
  const [head, ...rest] = name.replace(/\]/g, '').split('[');
  let target = fields;
  for (const key of [head, ...rest].slice(0, -1)) {
    if (typeof target[key] !== 'object' || target[key] === null) target[key] = Object.create(null);
    target = target[key];
  }
  target[[head, ...rest].at(-1)!] = value;
}
