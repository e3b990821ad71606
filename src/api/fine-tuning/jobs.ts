// /v1/fine_tuning/jobs: create, list (metadata filter), retrieve, cancel, pause, resume, events,
// checkpoints. Request rules live in domain/; this module parses, checks ownership and serializes.
import type { FastifyInstance } from 'fastify';
import type { JobCreateParams } from 'openai/resources/fine-tuning/jobs/jobs';
import { ApiError, invalidParam, notFound } from '../../domain/errors.ts';
import { METHOD_TYPES, parseJobMethod, resolveSeed, type ParsedJobMethod } from '../../domain/hyperparameters.ts';
import { jobEvents } from '../../domain/jobs.ts';
import {
  LORA_MODULES, loraModuleNames, resolveTrainingOptions, TRAINING_OPTIONS_SCHEMA, trainingOptionsIn,
  type TrainingOptions, type TrainingOptionsContext, type TrainingOptionsRequest,
} from '../../domain/training-options.ts';
import { readHfConfig, readPeftAdapterConfig } from '../../engine/index.ts';
import { modelWeightBytes, type CatalogueModel, type LocalModelFiles } from '../../models/catalogue.ts';
import { validateGrader, type Grader } from '../../graders/index.ts';
import { newId } from '../../domain/naming.ts';
import { INTEGRATIONS_SCHEMA } from '../../integrations/wandb.ts';
import { removeJobArtifacts } from '../../scheduler/job-artifacts.ts';
import { appendEvent, applyJobAction } from '../../scheduler/job-events.ts';
import type { CheckpointRecord, EventRecord, JobMethod, JobRecord, Store } from '../../store/index.ts';
import { nowSeconds } from '../../domain/clock.ts';
import type { ApiContext } from '../context.ts';
import { requireJsonlName } from '../files.ts';
import { graderSchema, specRequestSchema } from '../schemas.ts';
import { JSON_CONTENT_TYPE, listObject, pageQuerySchema, type PageQuery } from '../pagination.ts';
import { JobJsonCache } from './job-json.ts';

export function jobObject(job: JobRecord) {
  // The training options ride in the stored method (one JSON column); the job shows them on their own.
  const { training_options: trainingOptions, ...method } = job.method;
  const methodSettings = method[method.type] as { hyperparameters?: Record<string, unknown> } | undefined;
  return {
    object: 'fine_tuning.job' as const,
    id: job.id,
    model: job.model,
    created_at: job.created_at,
    finished_at: job.finished_at,
    fine_tuned_model: job.fine_tuned_model,
    organization_id: job.organization_id,
    result_files: job.result_files,
    status: job.status,
    validation_file: job.validation_file,
    training_file: job.training_file,
    // Deprecated top-level form: filled for supervised jobs only, as OpenAI does.
    hyperparameters: job.method.type === 'supervised' ? { ...(methodSettings?.hyperparameters ?? {}) } : {},
    trained_tokens: job.trained_tokens,
    error: job.error,
    integrations: job.integrations ?? [],
    seed: job.seed,
    estimated_finish: job.estimated_finish,
    method,
    metadata: job.metadata,
    user_provided_suffix: job.suffix,
    /** Extension: the job's training options (domain/training-options.ts); null on jobs made before them. */
    training_options: trainingOptions ?? null,
  };
}

export function eventObject(e: EventRecord) {
  return {
    object: 'fine_tuning.job.event' as const,
    id: e.id,
    created_at: e.created_at,
    level: e.level,
    message: e.message,
    type: e.type,
    data: e.data ?? {},
  };
}

export function checkpointObject(c: CheckpointRecord) {
  return {
    object: 'fine_tuning.job.checkpoint' as const,
    id: c.id,
    created_at: c.created_at,
    fine_tuned_model_checkpoint: c.fine_tuned_model_checkpoint,
    fine_tuning_job_id: c.job_id,
    metrics: c.metrics,
    step_number: c.step_number,
  };
}

/** The API form of a parsed method: `{type, <type>: {hyperparameters[, grader]}}`. */
export function methodObject(parsed: ParsedJobMethod): JobMethod {
  const settings: Record<string, unknown> = { hyperparameters: { ...parsed.hyperparameters } };
  if (parsed.type === 'reinforcement') settings.grader = parsed.grader;
  return { type: parsed.type, [parsed.type]: settings };
}

/** What OpenAI's description of `suffix` says in words: it becomes a segment of a model name (split on ':'). */
const SUFFIX_SCHEMA = { type: ['string', 'null'], minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' };
/** OpenAI's metadata limits, which its spec states in words: at most 16 pairs, keys 1–64 characters, values ≤ 512. */
const METADATA_SCHEMA = {
  type: ['object', 'null'],
  maxProperties: 16,
  propertyNames: { minLength: 1, maxLength: 64 },
  additionalProperties: { type: 'string', maxLength: 512 },
};

/**
 * The create-job body: OpenAI's CreateFineTuningJobRequest, with the limits above and W&B's written as schema and
 * the method's objects closed (an unknown hyperparameter is a 400 naming it); "auto" is also accepted for
 * reasoning_effort (it means "default"); the grader as on the graders routes. The rules across fields
 * are the domain's parseJobMethod, the grader's are validateGrader's.
 */
function createJobSchema() {
  const schema = specRequestSchema('CreateFineTuningJobRequest', {
    properties: { suffix: SUFFIX_SCHEMA, metadata: METADATA_SCHEMA, integrations: INTEGRATIONS_SCHEMA, ...TRAINING_OPTIONS_SCHEMA },
  });
  const method = schema.properties.method;
  method.additionalProperties = false;
  for (const type of METHOD_TYPES) {
    const settings = method.properties[type];
    settings.additionalProperties = false;
    settings.properties.hyperparameters.additionalProperties = false;
  }
  schema.properties.hyperparameters.additionalProperties = false;
  const reinforcement = method.properties.reinforcement.properties;
  reinforcement.hyperparameters.properties.reasoning_effort.enum.push('auto');
  reinforcement.grader = graderSchema();
  return schema;
}

/** The list's query: a page, and OpenAI's metadata filter (`metadata[k]=v` pairs, or `metadata=null` for jobs without metadata). */
const LIST_QUERY_SCHEMA = {
  ...pageQuerySchema('ftjob-', 20, 100, { metadata: { type: 'string', enum: ['null'] } }),
  patternProperties: { '^metadata\\[.+\\]$': { type: 'string' } },
};

/** `metadata[k]=v` query keys → a filter; `metadata=null` → jobs without metadata. */
function metadataFilter(query: Record<string, unknown>): Record<string, string> | null | undefined {
  if (query.metadata === 'null') return null;
  const filter: Record<string, string> = {};
  for (const [key, value] of Object.entries(query)) {
    const m = /^metadata\[(.+)\]$/.exec(key);
    if (m) filter[m[1]] = value as string;
  }
  return Object.keys(filter).length ? filter : undefined;
}

const DAY_SECONDS = 24 * 3600;

const sameModules = (a: string[], b: string[]) => a.length === b.length && a.every((m) => b.includes(m));

/**
 * A LoRA job on a LoRA fine-tune (or checkpoint) goes on training that adapter: it takes the
 * adapter's rank, alpha and target modules, and a request for others is a 400 naming the option.
 */
function continuedAdapter(model: CatalogueModel, files: LocalModelFiles, given: TrainingOptionsRequest, options: TrainingOptions): TrainingOptions {
  if (!files.adapterDir || !options.lora) return options;
  const { rank, alpha, targetModules } = readPeftAdapterConfig(files.adapterDir).settings;
  const adapter = {
    lora_r: rank,
    lora_alpha: alpha,
    lora_trainable_modules: sameModules(targetModules, [...LORA_MODULES]) ? 'all-linear' : targetModules.join(','),
  };
  for (const [key, value] of Object.entries(adapter) as [keyof typeof adapter, string | number][]) {
    const asked = given[key];
    if (asked === undefined || asked === null) continue;
    const same = key === 'lora_trainable_modules' ? sameModules(loraModuleNames(String(asked)), loraModuleNames(String(value))) : asked === value;
    if (!same) {
      throw invalidParam(key, `${model.name} is a LoRA adapter with ${key} ${value}; a job on it continues that adapter, so '${key}' must be ${value} or left out.`, 'invalid_value');
    }
  }
  return { ...options, ...adapter };
}

export async function jobRoutes(app: FastifyInstance, ctx: ApiContext) {
  const { store, config } = ctx;
  const jobJson = new JobJsonCache(store, jobObject);

  /**
   * A base model the engine can train, or a fine-tuned model or checkpoint of the organization (or
   * shared with it) to tune further.
   */
  async function checkModel(model: string, organization: string) {
    const found = await ctx.catalogue.find(model, organization);
    if (!found) throw invalidParam('model', `Model ${model} is not available for fine-tuning or does not exist.`, 'model_not_available');
    return found;
  }

  async function checkFile(fileId: string, organization: string, param: 'training_file' | 'validation_file') {
    const file = await store.files.get(fileId, organization);
    if (!file) throw invalidParam(param, `File ${fileId} not found.`, 'file_not_found');
    if (file.purpose !== 'fine-tune') {
      throw invalidParam(param, `File ${fileId} has purpose '${file.purpose}'; fine-tuning needs files uploaded with purpose 'fine-tune'.`, 'invalid_file_purpose');
    }
    // Uploads refuse other names now, but files stored before that rule still hold them.
    requireJsonlName(file.filename, param, `File ${fileId}`);
  }

  /**
   * OpenAI's 429 `daily_rate_limit_exceeded` (MAX_JOBS_PER_DAY_PER_ORG, over the last 24 hours),
   * checked after the new job's insert in the same transaction: throwing rolls it back.
   */
  async function checkDailyLimit(tx: Store, organization: string, now: number) {
    const limit = config.limits.maxJobsPerOrgPerDay;
    if (limit === 0) return;
    const { count, first } = await tx.jobs.createdSince(organization, now - DAY_SECONDS + 1);
    if (count <= limit) return;
    const retryAt = new Date((first! + DAY_SECONDS) * 1000).toISOString();
    throw new ApiError(
      429,
      `Your organization has created ${count - 1} fine-tuning jobs in the last 24 hours; the limit is ${limit}. Try again after ${retryAt}.`,
      'rate_limit_error',
      null,
      'daily_rate_limit_exceeded',
    );
  }

  async function ownJob(id: string, organization: string) {
    const job = await store.jobs.get(id, organization);
    if (!job) throw notFound('fine-tuning job', id, 'fine_tuning_job_id');
    return job;
  }

  /**
   * What the options' rules need of the model, from one read of its config.json: its
   * max_position_embeddings (context_length) and whether it fuses q/k/v and gate/up (Phi-3:
   * lora_trainable_modules). A config the engine cannot read checks neither (the job fails when it
   * trains, saying why).
   */
  function modelFacts(files: LocalModelFiles): Pick<TrainingOptionsContext, 'modelContext' | 'fusedProjections'> {
    try {
      const { config } = readHfConfig(files.modelDir);
      return { modelContext: config.maxPositionEmbeddings, fusedProjections: config.fusedProjections };
    } catch {
      return { modelContext: Number.POSITIVE_INFINITY, fusedProjections: false };
    }
  }

  app.post<{ Body: JobCreateParams & TrainingOptionsRequest }>('/fine_tuning/jobs', { schema: { body: createJobSchema() } }, async (request) => {
    const body = request.body;
    const organization = request.caller.organization;
    const method = parseJobMethod(body);
    // The grader's shape is the body schema's (graderSchema).
    if (method.type === 'reinforcement') validateGrader(method.grader as Grader, { param: 'method.reinforcement.grader' });
    const seed = resolveSeed(body.seed);
    const model = await checkModel(body.model, organization);
    const givenOptions = trainingOptionsIn(body);
    // The model's files, read where they are (pulled into this host's blob cache when not here).
    const files = await ctx.catalogue.open(model);
    let trainingOptions: TrainingOptions;
    let memoryRequired: number | null;
    try {
      memoryRequired = modelWeightBytes(files);
      trainingOptions = continuedAdapter(model, files, givenOptions, resolveTrainingOptions(givenOptions, config.training.defaults, {
        method: method.type,
        hasValidationFile: Boolean(body.validation_file),
        ...modelFacts(files),
      }));
    } finally {
      files.release();
    }
    await checkFile(body.training_file, organization, 'training_file');
    if (body.validation_file) await checkFile(body.validation_file, organization, 'validation_file');

    const id = newId('ftjob-');
    const now = nowSeconds();
    const job = await store.transaction(async (tx) => {
      // One organization's creations take turns, so each counts the others' jobs (daily limit).
      await tx.jobs.lockOrganization(organization, 'create');
      const job = await tx.jobs.insert({
        id,
        organization_id: organization,
        model: body.model,
        training_file: body.training_file,
        validation_file: body.validation_file ?? null,
        status: 'validating_files',
        method: { ...methodObject(method), training_options: trainingOptions },
        suffix: body.suffix ?? null,
        seed,
        // fromEntries, not the parsed object itself: a key such as "__proto__" stays an ordinary key
        metadata: body.metadata ? Object.fromEntries(Object.entries(body.metadata)) : null,
        integrations: body.integrations ?? null,
        created_at: now,
        memory_required_bytes: memoryRequired,
      });
      await checkDailyLimit(tx, organization, now);
      await appendEvent(tx, id, jobEvents.created(id));
      await appendEvent(tx, id, jobEvents.validating(job.training_file, job.validation_file));
      return job;
    });
    ctx.startFileValidation(id);
    return jobObject(job);
  });

  app.get<{ Querystring: PageQuery & Record<string, unknown> }>(
    '/fine_tuning/jobs',
    { schema: { querystring: LIST_QUERY_SCHEMA } },
    async (request, reply) => {
      const { after, limit } = request.query;
      const json = await jobJson.page(request.caller.organization, { after, limit, metadata: metadataFilter(request.query) });
      return reply.type(JSON_CONTENT_TYPE).send(json);
    },
  );

  app.get<{ Params: { id: string } }>('/fine_tuning/jobs/:id', async (request, reply) => {
    const json = await jobJson.one(request.params.id, request.caller.organization);
    if (json === undefined) throw notFound('fine-tuning job', request.params.id, 'fine_tuning_job_id');
    return reply.type(JSON_CONTENT_TYPE).send(json);
  });

  app.post<{ Params: { id: string } }>('/fine_tuning/jobs/:id/cancel', async (request) => {
    const organizationId = request.caller.organization;
    const before = await ownJob(request.params.id, organizationId);
    const job = await applyJobAction(store, request.params.id, 'cancel', {
      organizationId,
      // Ended now, as succeeded and failed jobs are; the worker writes only while the job is running.
      patch: { estimated_finish: null, finished_at: nowSeconds() },
      event: jobEvents.cancelled(),
    });
    // A running job's worker stops within a heartbeat and removes what it wrote; otherwise (queued,
    // paused, or a worker that died) nothing writes the job's files any more: remove them now.
    const workerAlive = before.status === 'running' && (before.lease_expires_at_ms ?? 0) >= Date.now();
    if (!workerAlive) {
      await removeJobArtifacts(store, config.dataDir, job.id).catch((err) => request.log.warn({ err, job: job.id }, 'could not remove the artifacts of a cancelled job'));
    }
    ctx.onJobFinished(job.id, 'cancelled');
    return jobObject(job);
  });

  app.post<{ Params: { id: string } }>('/fine_tuning/jobs/:id/pause', async (request) => {
    const organizationId = request.caller.organization;
    await ownJob(request.params.id, organizationId);
    const job = await applyJobAction(store, request.params.id, 'pause', {
      organizationId,
      patch: { estimated_finish: null },
      event: jobEvents.paused(),
    });
    return jobObject(job);
  });

  app.post<{ Params: { id: string } }>('/fine_tuning/jobs/:id/resume', async (request) => {
    const organizationId = request.caller.organization;
    await ownJob(request.params.id, organizationId);
    const job = await applyJobAction(store, request.params.id, 'resume', { organizationId, event: jobEvents.resumed() });
    return jobObject(job);
  });

  app.get<{ Params: { id: string }; Querystring: PageQuery }>(
    '/fine_tuning/jobs/:id/events',
    { schema: { querystring: pageQuerySchema('ftevent-', 20, 100) } },
    async (request) => {
      const job = await ownJob(request.params.id, request.caller.organization);
      const page = await store.events.list(job.id, { after: request.query.after, limit: request.query.limit });
      return listObject(page.data.map(eventObject), page.hasMore);
    },
  );

  app.get<{ Params: { id: string }; Querystring: PageQuery }>(
    '/fine_tuning/jobs/:id/checkpoints',
    { schema: { querystring: pageQuerySchema('ftckpt_', 10, 100) } },
    async (request) => {
      const job = await ownJob(request.params.id, request.caller.organization);
      const page = await store.checkpoints.listForJob(job.id, { after: request.query.after, limit: request.query.limit });
      return listObject(page.data.map(checkpointObject), page.hasMore);
    },
  );
}
