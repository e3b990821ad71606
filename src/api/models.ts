// /v1/models: base models (MODELS_DIR), plus the caller's fine-tuned models and checkpoints, plus
// checkpoints other organizations shared with the caller. Delete: own fine-tuned models only, with
// their weights in the blob store.
import type { FastifyInstance } from 'fastify';
import { ApiError, notFound } from '../domain/errors.ts';
import { findBaseModel, listBaseModels } from '../models/base-models.ts';
import type { ApiContext } from './context.ts';

const BASE_OWNER = 'system';

function modelObject(id: string, created: number, ownedBy: string) {
  return { id, object: 'model' as const, created, owned_by: ownedBy };
}

export async function modelRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store, config } = ctx;

  async function visibleModels(organization: string) {
    const base = (await listBaseModels(config.modelsDir)).map((m) => modelObject(m.id, m.created, BASE_OWNER));
    const tuned = (await store.models.list(organization)).map((m) => modelObject(m.id, m.created_at, m.organization_id));
    const tunedIds = new Set(tuned.map((m) => m.id));
    const checkpoints = (await store.checkpoints.listForOrganization(organization))
      .filter((c) => !tunedIds.has(c.fine_tuned_model_checkpoint)) // a job's final checkpoint is its model: listed once
      .map((c) => modelObject(c.fine_tuned_model_checkpoint, c.created_at, c.organization_id));
    const shared: ReturnType<typeof modelObject>[] = [];
    for (const name of await store.permissions.sharedWith(organization)) {
      const c = await store.checkpoints.getByName(name);
      if (c && c.organization_id !== organization) shared.push(modelObject(name, c.created_at, c.organization_id));
    }
    return [...base, ...tuned, ...checkpoints, ...shared];
  }

  app.get('/models', async (request) => ({ object: 'list' as const, data: await visibleModels(request.caller.organization) }));

  app.get<{ Params: { model: string } }>('/models/:model', async (request) => {
    const id = request.params.model;
    const found = (await visibleModels(request.caller.organization)).find((m) => m.id === id);
    if (!found) throw new ApiError(404, `The model '${id}' does not exist or you do not have access to it.`, 'invalid_request_error', 'model', 'model_not_found');
    return found;
  });

  app.delete<{ Params: { model: string } }>('/models/:model', async (request) => {
    const id = request.params.model;
    const organization = request.caller.organization;
    if (await findBaseModel(config.modelsDir, id)) {
      throw new ApiError(403, `You cannot delete ${id}: only your organization's fine-tuned models can be deleted.`, 'permission_error', 'model', 'model_not_deletable');
    }
    const deleted = await store.models.delete(id, organization);
    if (!deleted) throw notFound('model', id, 'model');
    // Its weights go with it (a job tuned from it keeps its own copy: scheduler/job-start.ts).
    if (deleted.dir) await store.blobs.removePrefix(deleted.dir);
    return { id, object: 'model' as const, deleted: true };
  });
}
