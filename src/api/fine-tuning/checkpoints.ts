// /v1/fine_tuning/checkpoints/{checkpoint}/permissions: share a checkpoint with other projects
// (organizations here). Admin keys only; the checkpoint must belong to the admin's organization.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { PermissionCreateParams } from 'openai/resources/fine-tuning/checkpoints/permissions';
import { notFound } from '../../domain/errors.ts';
import { newId } from '../../domain/naming.ts';
import type { PermissionRecord } from '../../store/index.ts';
import { requireAdmin } from '../auth.ts';
import { nowSeconds } from '../../domain/clock.ts';
import type { ApiContext } from '../context.ts';
import { listObject, pageQuerySchema } from '../pagination.ts';
import { specRequestSchema } from '../schemas.ts';

export function permissionObject(p: PermissionRecord) {
  return { object: 'checkpoint.permission' as const, id: p.id, created_at: p.created_at, project_id: p.project_id };
}

type Params = { checkpoint: string };

/** OpenAI's CreateFineTuningCheckpointPermissionRequest, with tuneforge's bounds on the list and its ids. */
const createPermissionSchema = specRequestSchema('CreateFineTuningCheckpointPermissionRequest', {
  properties: { project_ids: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 256 } } },
});

export async function checkpointRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store } = ctx;

  async function ownCheckpoint(request: FastifyRequest<{ Params: Params }>) {
    requireAdmin(request);
    const name = request.params.checkpoint;
    const checkpoint = await store.checkpoints.getByName(name);
    if (!checkpoint || checkpoint.organization_id !== request.caller.organization) {
      throw notFound('checkpoint', name, 'fine_tuned_model_checkpoint');
    }
    return checkpoint;
  }

  app.post<{ Params: Params; Body: PermissionCreateParams }>(
    '/fine_tuning/checkpoints/:checkpoint/permissions',
    { schema: { body: createPermissionSchema } },
    async (request) => {
      const checkpoint = await ownCheckpoint(request);
      const granted: PermissionRecord[] = [];
      for (const projectId of new Set(request.body.project_ids)) {
        const existing = await store.permissions.find(checkpoint.fine_tuned_model_checkpoint, projectId);
        granted.push(
          existing ??
            (await store.permissions.add({
              id: newId('cp_'),
              checkpoint: checkpoint.fine_tuned_model_checkpoint,
              project_id: projectId,
              created_at: nowSeconds(),
            })),
        );
      }
      return listObject(granted.map(permissionObject), false);
    },
  );

  app.get<{ Params: Params; Querystring: { after?: string; limit: number; order: 'ascending' | 'descending'; project_id?: string } }>(
    '/fine_tuning/checkpoints/:checkpoint/permissions',
    {
      schema: {
        querystring: pageQuerySchema('cp_', 10, 100, {
          order: { type: 'string', enum: ['ascending', 'descending'], default: 'descending' },
          project_id: { type: 'string' },
        }),
      },
    },
    async (request) => {
      const checkpoint = await ownCheckpoint(request);
      const { after, limit, order, project_id } = request.query;
      const page = await store.permissions.list(checkpoint.fine_tuned_model_checkpoint, {
        after,
        limit,
        order: order === 'ascending' ? 'asc' : 'desc',
        projectId: project_id,
      });
      return listObject(page.data.map(permissionObject), page.hasMore);
    },
  );

  app.delete<{ Params: Params & { permission_id: string } }>(
    '/fine_tuning/checkpoints/:checkpoint/permissions/:permission_id',
    async (request) => {
      const checkpoint = await ownCheckpoint(request);
      const id = request.params.permission_id;
      if (!(await store.permissions.delete(checkpoint.fine_tuned_model_checkpoint, id))) {
        throw notFound('checkpoint permission', id, 'permission_id');
      }
      return { object: 'checkpoint.permission' as const, id, deleted: true };
    },
  );
}
