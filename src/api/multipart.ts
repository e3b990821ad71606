// Reads a multipart/form-data request: one file part, streamed to a handler as it arrives (never
// buffered whole), plus text fields. The file may come before or after the fields.
import type { FastifyRequest } from 'fastify';
import type {} from '@fastify/multipart';
import type { Readable } from 'node:stream';
import { ApiError, invalidParam } from '../domain/errors.ts';
import { BlobTooLargeError } from '../store/index.ts';

export interface MultipartResult<T> {
  fields: Record<string, string>;
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
  allowedFields: string[],
  storeFile: (stream: Readable) => Promise<T>,
  discard: (stored: T) => Promise<void>,
): Promise<MultipartResult<T>> {
  if (!request.isMultipart()) {
    throw new ApiError(400, 'This endpoint expects a multipart/form-data body.', 'invalid_request_error', null, 'invalid_content_type');
  }
  const fields: Record<string, string> = {};
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
        fields[part.fieldname] = String(part.value);
      }
    }
  } catch (err) {
    if (file) await discard(file.stored);
    throw isParserError(err)
      ? new ApiError(400, `Malformed multipart/form-data body: ${(err as Error).message}`, 'invalid_request_error', null, 'invalid_multipart')
      : err;
  }
  return { fields, file };
}
