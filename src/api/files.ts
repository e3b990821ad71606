// /v1/files: upload (multipart), list, retrieve, content, delete.
import type { FastifyInstance } from 'fastify';
import { invalidParam, notFound } from '../domain/errors.ts';
import { newId } from '../domain/naming.ts';
import { removeFile } from '../store/expiry.ts';
import { blobKeys, type FileRow } from '../store/index.ts';
import { nowSeconds } from '../domain/clock.ts';
import type { ApiContext } from './context.ts';
import { formFields, readMultipart } from './multipart.ts';
import { listObject, pageQuerySchema } from './pagination.ts';
import { specRequestSchema } from './schemas.ts';

/** Purposes a client may upload. `fine-tune-results` is written by the service only. */
export const UPLOAD_PURPOSES = ['fine-tune'] as const;
/** OpenAI purposes this service does not serve (no Assistants/Batch/Vision APIs here). */
const OTHER_OPENAI_PURPOSES = ['assistants', 'batch', 'vision', 'user_data', 'evals'];

export function checkUploadPurpose(purpose: string | undefined, param = 'purpose'): string {
  if (purpose === undefined || purpose === '') throw invalidParam(param, `Missing required parameter: '${param}'.`, 'missing_required_parameter');
  if ((UPLOAD_PURPOSES as readonly string[]).includes(purpose)) return purpose;
  if (OTHER_OPENAI_PURPOSES.includes(purpose) || purpose === 'fine-tune-results') {
    throw invalidParam(param, `Purpose '${purpose}' is not supported by this server: upload fine-tuning data with purpose 'fine-tune'.`, 'unsupported_purpose');
  }
  throw invalidParam(param, `Invalid value for '${param}': '${purpose}'. Supported values: 'fine-tune'.`, 'invalid_value');
}

/**
 * Fine-tuning takes JSONL files and, as OpenAI, tells them by name: a 400 on `param` unless `filename`
 * ends in .jsonl (any case). `subject` names the file in the message ("File file-…", "The file").
 */
export function requireJsonlName(filename: string, param: string, subject: string): void {
  if (filename.toLowerCase().endsWith('.jsonl')) return;
  throw invalidParam(param, `${subject} is named '${filename}', but fine-tuning takes JSONL files: the file must be a .jsonl file.`, 'invalid_file_format');
}

/** The OpenAI file object; `expires_at`/`status_details` are omitted when unset (the spec has no null). */
export function fileObject(f: FileRow) {
  return {
    id: f.id,
    object: 'file' as const,
    bytes: Number(f.bytes),
    created_at: Number(f.created_at),
    ...(f.expires_at === null ? {} : { expires_at: Number(f.expires_at) }),
    filename: f.filename,
    purpose: f.purpose,
    status: f.status,
    ...(f.status_details === null ? {} : { status_details: f.status_details }),
  };
}

/** Display name only: it is stored in SQL, never used as a path. */
export function cleanFilename(name: string | undefined, fallback: string): string {
  const cleaned = (name ?? '').replace(/[\u0000-\u001f\u007f]/g, '').slice(0, 255).trim();
  return cleaned || fallback;
}

/**
 * POST /files's text fields: OpenAI's CreateFileRequest but its file part, with any purpose string
 * (checkUploadPurpose answers the ones this server does not serve with their own code) and no
 * unknown key in expires_after.
 */
const UPLOAD_FIELDS = (() => {
  const { file: _file, ...properties } = specRequestSchema('CreateFileRequest', { properties: { purpose: { type: 'string' } } }).properties;
  properties.expires_after = { ...properties.expires_after, additionalProperties: false };
  return formFields({ type: 'object', properties, required: ['purpose'], additionalProperties: false });
})();

export async function fileRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store, config } = ctx;

  app.post('/files', async (request) => {
    const id = newId('file-');
    const key = blobKeys.file(id);
    const { fields, file } = await readMultipart(
      request,
      'file',
      UPLOAD_FIELDS,
      (stream) => store.blobs.put(key, stream, { maxBytes: config.limits.fileBytes }),
      () => store.blobs.remove(key),
    );
    try {
      if (!file) throw invalidParam('file', "Missing required parameter: 'file'.", 'missing_required_parameter');
      const purpose = checkUploadPurpose(fields.purpose);
      const filename = cleanFilename(file.filename, `${id}.jsonl`);
      if (purpose === 'fine-tune') requireJsonlName(filename, 'file', 'The file');
      const created = nowSeconds();
      // The schema took `created_at`, the one anchor there is.
      const expiresAt: number | null = fields.expires_after ? created + fields.expires_after.seconds : null;
      const row = await store.files.insert({
        id,
        organization_id: request.caller.organization,
        filename,
        purpose,
        bytes: file.stored.bytes,
        created_at: created,
        expires_at: expiresAt,
        status: 'processed',
        status_details: null,
      });
      return fileObject(row);
    } catch (err) {
      await store.blobs.remove(key);
      throw err;
    }
  });

  app.get<{ Querystring: { after?: string; limit: number; order: 'asc' | 'desc'; purpose?: string } }>(
    '/files',
    { schema: { querystring: pageQuerySchema('file-', 10000, 10000, { order: { type: 'string', enum: ['asc', 'desc'], default: 'desc' }, purpose: { type: 'string' } }) } },
    async (request) => {
      const { after, limit, order, purpose } = request.query;
      const page = await store.files.list(request.caller.organization, { after, limit, order, purpose });
      return listObject(page.data.map(fileObject), page.hasMore);
    },
  );

  const ownFile = async (id: string, organization: string) => {
    const row = await store.files.get(id, organization);
    if (!row) throw notFound('file', id, 'file_id');
    return row;
  };

  app.get<{ Params: { file_id: string } }>('/files/:file_id', async (request) =>
    fileObject(await ownFile(request.params.file_id, request.caller.organization)),
  );

  app.get<{ Params: { file_id: string } }>('/files/:file_id/content', async (request, reply) => {
    const row = await ownFile(request.params.file_id, request.caller.organization);
    reply.header('content-type', 'application/octet-stream');
    reply.header('content-length', String(row.bytes));
    return reply.send(store.blobs.read(blobKeys.file(row.id)));
  });

  app.delete<{ Params: { file_id: string } }>('/files/:file_id', async (request) => {
    const row = await ownFile(request.params.file_id, request.caller.organization);
    await removeFile(store, row);
    return { id: row.id, object: 'file' as const, deleted: true };
  });
}
