// /v1/uploads: a large file sent in parts (each ≤ 64 MB), joined in `part_ids` order on complete,
// with an optional md5 check. Pending uploads expire an hour after creation.
import type { FastifyInstance } from 'fastify';
import type { UploadCompleteParams, UploadCreateParams } from 'openai/resources/uploads/uploads';
import { ApiError, invalidParam, notFound } from '../domain/errors.ts';
import { newId } from '../domain/naming.ts';
import { discardUploadParts, expireUpload } from '../store/expiry.ts';
import { blobKeys, type Store, type UploadRow } from '../store/index.ts';
import { nowSeconds } from '../domain/clock.ts';
import type { ApiContext } from './context.ts';
import { checkUploadPurpose, cleanFilename, fileObject, requireJsonlName } from './files.ts';
import { readMultipart } from './multipart.ts';
import { specRequestSchema } from './schemas.ts';

async function uploadObject(store: Store, u: UploadRow) {
  const file = u.file_id ? await store.files.get(u.file_id) : undefined;
  return {
    id: u.id,
    object: 'upload' as const,
    bytes: Number(u.bytes),
    created_at: Number(u.created_at),
    expires_at: Number(u.expires_at),
    filename: u.filename,
    purpose: u.purpose,
    status: u.status,
    file: file ? fileObject(file) : null,
  };
}

/**
 * OpenAI's CreateUploadRequest, where tuneforge says more: a name, a byte count that is a size, and any
 * purpose string (checkUploadPurpose answers the ones this server does not serve with their own code).
 */
const createUploadSchema = specRequestSchema('CreateUploadRequest', {
  properties: { filename: { type: 'string', minLength: 1 }, purpose: { type: 'string' }, bytes: { type: 'integer', minimum: 0 } },
});

/** OpenAI's CompleteUploadRequest; an upload is made of at least one part. */
const completeSchema = specRequestSchema('CompleteUploadRequest', { properties: { part_ids: { type: 'array', items: { type: 'string' }, minItems: 1 } } });

export async function uploadRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store, config } = ctx;

  /** The caller's upload, marked expired first if its hour has passed (the sweep may not have run yet). */
  async function ownUpload(id: string, organization: string): Promise<UploadRow> {
    let row = await store.uploads.get(id, organization);
    if (!row) throw notFound('upload', id, 'upload_id');
    if (row.status === 'pending' && Number(row.expires_at) <= nowSeconds()) {
      await expireUpload(store, id);
      row = (await store.uploads.get(id, organization))!;
    }
    return row;
  }

  function requirePending(u: UploadRow) {
    if (u.status !== 'pending') {
      throw new ApiError(400, `Upload ${u.id} is ${u.status}; only a pending upload accepts this operation.`, 'invalid_request_error', null, 'upload_not_pending');
    }
  }

  app.post<{ Body: UploadCreateParams }>(
    '/uploads',
    { schema: { body: createUploadSchema } },
    async (request) => {
      const body = request.body;
      const purpose = checkUploadPurpose(body.purpose);
      const filename = cleanFilename(body.filename, 'upload.jsonl');
      // Refused now rather than after gigabytes of parts: the file it makes could not be used.
      if (purpose === 'fine-tune') requireJsonlName(filename, 'filename', 'The upload');
      if (body.bytes > config.limits.uploadBytes) {
        throw invalidParam('bytes', `Invalid 'bytes': an upload can hold at most ${config.limits.uploadBytes} bytes.`, 'upload_too_large');
      }
      const created = nowSeconds();
      const row = await store.uploads.insert({
        id: newId('upload_'),
        organization_id: request.caller.organization,
        filename,
        purpose,
        bytes: body.bytes,
        mime_type: body.mime_type,
        status: 'pending',
        created_at: created,
        // An upload's own lifetime is an hour, as OpenAI's; `expires_after` applies to the file it makes.
        expires_at: created + config.limits.uploadExpirySeconds,
        file_id: null,
        file_expires_after: body.expires_after?.seconds ?? null,
      });
      return uploadObject(store, row);
    },
  );

  app.post<{ Params: { upload_id: string } }>('/uploads/:upload_id/parts', async (request) => {
    const upload = await ownUpload(request.params.upload_id, request.caller.organization);
    requirePending(upload);
    const partId = newId('part_');
    const key = blobKeys.uploadPart(upload.id, partId);
    const { file } = await readMultipart(
      request,
      'data',
      null,
      (stream) => store.blobs.put(key, stream, { maxBytes: config.limits.uploadPartBytes }),
      () => store.blobs.remove(key),
    );
    if (!file) throw invalidParam('data', "Missing required parameter: 'data'.", 'missing_required_parameter');
    const part = await store.uploads.addPart({ id: partId, upload_id: upload.id, bytes: file.stored.bytes, created_at: nowSeconds() });
    return { id: part.id, object: 'upload.part' as const, created_at: Number(part.created_at), upload_id: upload.id };
  });

  app.post<{ Params: { upload_id: string }; Body: UploadCompleteParams }>(
    '/uploads/:upload_id/complete',
    { schema: { body: completeSchema } },
    async (request) => {
      const upload = await ownUpload(request.params.upload_id, request.caller.organization);
      requirePending(upload);
      const { part_ids, md5 } = request.body;
      const parts = new Map((await store.uploads.parts(upload.id)).map((p) => [p.id, p]));
      const seen = new Set<string>();
      let total = 0;
      for (const id of part_ids) {
        const part = parts.get(id);
        if (!part) throw invalidParam('part_ids', `Part ${id} does not belong to upload ${upload.id}.`, 'invalid_part_id');
        if (seen.has(id)) throw invalidParam('part_ids', `Part ${id} is listed more than once.`, 'duplicate_part_id');
        seen.add(id);
        total += Number(part.bytes);
      }
      if (total !== Number(upload.bytes)) {
        throw invalidParam('part_ids', `The parts add up to ${total} bytes, but the upload was created with bytes=${upload.bytes}.`, 'bytes_mismatch');
      }
      const fileId = newId('file-');
      const fileKey = blobKeys.file(fileId);
      const written = await store.blobs.concat(fileKey, part_ids.map((id) => blobKeys.uploadPart(upload.id, id)));
      if (md5 !== undefined && md5.toLowerCase() !== written.md5) {
        await store.blobs.remove(fileKey);
        throw invalidParam('md5', `The md5 checksum ${md5} does not match the uploaded content (${written.md5}).`, 'md5_mismatch');
      }
      const created = nowSeconds();
      await store.files.insert({
        id: fileId,
        organization_id: upload.organization_id,
        filename: upload.filename,
        purpose: upload.purpose,
        bytes: written.bytes,
        created_at: created,
        // Anchored at the file's created_at, as `expires_after` on POST /files is.
        expires_at: upload.file_expires_after === null ? null : created + Number(upload.file_expires_after),
        status: 'processed',
        status_details: null,
      });
      if (!(await store.uploads.updateIfStatus(upload.id, 'pending', { status: 'completed', file_id: fileId }))) {
        // Cancelled or completed concurrently: this file must not exist.
        await store.files.delete(fileId, upload.organization_id);
        await store.blobs.remove(fileKey);
        requirePending((await store.uploads.get(upload.id))!);
      }
      await discardUploadParts(store, upload.id);
      return uploadObject(store, (await store.uploads.get(upload.id))!);
    },
  );

  app.post<{ Params: { upload_id: string } }>('/uploads/:upload_id/cancel', async (request) => {
    const upload = await ownUpload(request.params.upload_id, request.caller.organization);
    requirePending(upload);
    if (!(await store.uploads.updateIfStatus(upload.id, 'pending', { status: 'cancelled' }))) {
      requirePending((await store.uploads.get(upload.id))!);
    }
    await discardUploadParts(store, upload.id);
    return uploadObject(store, (await store.uploads.get(upload.id))!);
  });
}
