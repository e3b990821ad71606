// /v1/fine_tuning/alpha/graders/validate and /run. Grader rules live in src/graders/; this module
// parses the request, checks that grader models exist for the caller, wires score_model/label_model
// to our own inference and the python grader to its sandbox (limits from PYTHON_GRADER_* env).
//
// Grader models: a base model folder of MODELS_DIR or one of the caller's fine-tuned models (a LoRA
// adapter over its base, or full weights), served by an InferenceHost (worker thread) created on
// first use and closed with the server. Sampling defaults where the grader sets none: temperature 0
// (grading should be repeatable), at most 512 new tokens (bounded by the context length).
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { invalidParam } from '../../domain/errors.ts';
import { InferenceHost, type ModelInfo, type ModelSourceMessage } from '../../engine/infer/index.ts';
import {
  checkPythonSources,
  leafGraders,
  pythonLimitsFromEnv,
  runGrader,
  validateGrader,
  type CallModel,
  type Grader,
  type GraderModelReply,
  type PythonSandboxOptions,
} from '../../graders/index.ts';
import { findBaseModel } from '../../store/base-models.ts';
import type { Store } from '../../store/index.ts';
import type { ApiContext } from '../context.ts';

export interface GraderRouteOptions {
  /** Replaces our own inference for grader models (tests). */
  callModel?: (organization: string) => CallModel;
  /** Whether a model name is usable by `organization` (with callModel; default: every name). */
  modelExists?: (model: string, organization: string) => Promise<boolean>;
  python?: PythonSandboxOptions;
}

const MAX_LOADED_MODELS = 4;
const DEFAULT_MAX_TOKENS = 512;

/** Grader models served by our own inference engine. */
export class OwnGraderModels {
  private host: InferenceHost | null = null;
  private readonly loaded = new Map<string, Promise<ModelInfo>>();
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly modelsDir: string,
  ) {}

  async resolve(name: string, organization: string): Promise<{ key: string; source: ModelSourceMessage } | null> {
    const base = await findBaseModel(this.modelsDir, name);
    if (base) return { key: `base:${base.dir}`, source: { baseModelDir: base.dir } };
    const tuned = await this.store.models.get(name, organization);
    if (!tuned?.dir) return null;
    const tunedBase = await findBaseModel(this.modelsDir, tuned.base_model);
    if (!tunedBase) return null;
    if (existsSync(path.join(tuned.dir, 'adapter_config.json'))) {
      return { key: `tuned:${tuned.dir}`, source: { baseModelDir: tunedBase.dir, adapterDir: tuned.dir } };
    }
    if (existsSync(path.join(tuned.dir, 'config.json'))) return { key: `tuned:${tuned.dir}`, source: { baseModelDir: tunedBase.dir, modelDir: tuned.dir } };
    return null;
  }

  private load(key: string, source: ModelSourceMessage): Promise<ModelInfo> {
    if (this.closed) return Promise.reject(new Error('the server is shutting down'));
    const host = (this.host ??= new InferenceHost());
    let info = this.loaded.get(key);
    if (info) this.loaded.delete(key);
    else {
      info = host.load(key, source);
      const mine = info;
      info.catch(() => this.loaded.get(key) === mine && this.loaded.delete(key));
    }
    this.loaded.set(key, info);
    for (const old of this.loaded.keys()) {
      if (this.loaded.size <= MAX_LOADED_MODELS) break;
      this.loaded.delete(old);
      void host.unload(old).catch(() => {});
    }
    return info;
  }

  callModel(organization: string): CallModel {
    return async (model, messages, sampling): Promise<GraderModelReply> => {
      const resolved = await this.resolve(model, organization);
      if (!resolved) throw new Error(`the model '${model}' is not available`);
      const info = await this.load(resolved.key, resolved.source);
      const host = this.host!;
      const promptIds = await host.chatPrompt(resolved.key, messages);
      const room = info.contextLength - promptIds.length;
      if (room < 1) throw new Error(`the grader prompt (${promptIds.length} tokens) fills the model's context of ${info.contextLength} tokens`);
      const result = await host.generate(resolved.key, promptIds, {
        maxTokens: Math.min(room, sampling.max_tokens ?? DEFAULT_MAX_TOKENS),
        temperature: sampling.temperature ?? 0,
        topP: sampling.top_p,
        seed: sampling.seed,
      });
      return { text: result.text, usage: { prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens }, model };
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    const host = this.host;
    this.host = null;
    await host?.close();
  }
}

const validateBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['grader'],
  properties: { grader: {} },
} as const;

const runBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['grader', 'model_sample'],
  properties: { grader: {}, item: {}, model_sample: { type: 'string' } },
} as const;

export async function graderRoutes(app: FastifyInstance, ctx: ApiContext, options: GraderRouteOptions = {}) {
  const python: PythonSandboxOptions = options.python ?? {
    limits: pythonLimitsFromEnv(),
    hidePaths: [ctx.config.dataDir, ctx.config.modelsDir, process.cwd()],
  };
  let own: OwnGraderModels | null = null;
  if (!options.callModel) {
    own = new OwnGraderModels(ctx.store, ctx.config.modelsDir);
    app.addHook('onClose', async () => own?.close());
  }
  const callModel = options.callModel ?? ((organization: string) => own!.callModel(organization));
  const modelExists = options.modelExists ?? (own ? async (model: string, org: string) => (await own!.resolve(model, org)) !== null : async () => true);

  /** validateGrader plus what needs I/O: grader models exist, python sources parse. */
  async function checkGrader(raw: unknown, organization: string): Promise<Grader> {
    const grader = validateGrader(raw, { python });
    for (const [leaf, param] of leafGraders(grader)) {
      if ((leaf.type === 'score_model' || leaf.type === 'label_model') && !(await modelExists(leaf.model, organization))) {
        throw invalidParam(`${param}.model`, `The model '${leaf.model}' does not exist or is not available for grading (base models of this server and your fine-tuned models are).`, 'model_not_found');
      }
    }
    await checkPythonSources(grader, python);
    return grader;
  }

  app.post<{ Body: { grader: unknown } }>('/fine_tuning/alpha/graders/validate', { schema: { body: validateBodySchema } }, async (request) => {
    await checkGrader(request.body.grader, request.caller.organization);
    return { grader: request.body.grader };
  });

  app.post<{ Body: { grader: unknown; item?: unknown; model_sample: string } }>(
    '/fine_tuning/alpha/graders/run',
    { schema: { body: runBodySchema } },
    async (request) => {
      const { grader, item, model_sample } = request.body;
      if (item !== undefined && item !== null && (typeof item !== 'object' || Array.isArray(item))) {
        throw invalidParam('item', `Invalid 'item': expected an object (the dataset item), but got ${Array.isArray(item) ? 'an array' : typeof item} instead.`);
      }
      const organization = request.caller.organization;
      await checkGrader(grader, organization);
      return runGrader(grader, { item: item ?? {}, modelSample: model_sample }, { callModel: callModel(organization), python });
    },
  );
}
