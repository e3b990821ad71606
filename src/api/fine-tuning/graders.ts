// /v1/fine_tuning/alpha/graders/validate and /run. Grader rules live in src/graders/; this module
// parses the request, checks that grader models exist for the caller, wires score_model/label_model
// to our own inference and the python grader to its sandbox (limits from PYTHON_GRADER_* env).
//
// Grader models: the names /v1/chat/completions serves to the caller (base models of MODELS_DIR,
// the caller's fine-tuned models and checkpoints, checkpoints shared with it), on the server's one
// InferenceService (its worker thread and loaded models). Sampling defaults where the grader sets
// none: temperature 0 (grading should be repeatable), at most 512 new tokens (bounded by the
// context length).
import type { FastifyInstance } from 'fastify';
import { invalidParam } from '../../domain/errors.ts';
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
import type { GraderRunParams, GraderValidateParams } from 'openai/resources/fine-tuning/alpha/graders';
import type { ApiContext } from '../context.ts';
import { graderSchema, specRequestSchema } from '../schemas.ts';
import type { InferenceService } from '../inference/service.ts';

export interface GraderRouteOptions {
  /** Replaces our own inference for grader models (tests). */
  callModel?: (organization: string) => CallModel;
  /** Whether a model name is usable by `organization` (with callModel; default: every name). */
  modelExists?: (model: string, organization: string) => Promise<boolean>;
  python?: PythonSandboxOptions;
}

const DEFAULT_MAX_TOKENS = 512;

/** Grader models for `organization` served by the server's inference service. */
export function servedGraderModels(service: InferenceService, organization: string): CallModel {
  return (model, messages, sampling) =>
    service.withModel(model, organization, async (resolved, info): Promise<GraderModelReply> => {
      const promptIds = await service.chatPrompt(resolved.key, messages);
      const room = info.contextLength - promptIds.length;
      if (room < 1) throw new Error(`the grader prompt (${promptIds.length} tokens) fills the model's context of ${info.contextLength} tokens`);
      const options = { maxTokens: Math.min(room, sampling.max_tokens ?? DEFAULT_MAX_TOKENS), temperature: sampling.temperature ?? 0, topP: sampling.top_p, seed: sampling.seed };
      try {
        const result = await service.generate(resolved.key, promptIds, options);
        return { text: result.text, usage: { prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens }, model };
      } catch (error) {
        service.generationFailed(error);
        throw error;
      }
    });
}

/**
 * OpenAI's request schemas, the grader's as a job's reinforcement grader's (graderSchema); the rules
 * across its fields are graders/validate.ts's. A run's `item` may also be null (no dataset item).
 */
const validateBodySchema = specRequestSchema('ValidateGraderRequest', { properties: { grader: graderSchema() } });
const runBodySchema = specRequestSchema('RunGraderRequest', { properties: { grader: graderSchema(), item: { type: ['object', 'null'] } } });

export async function graderRoutes(app: FastifyInstance, ctx: ApiContext, inference: InferenceService, options: GraderRouteOptions = {}) {
  const python: PythonSandboxOptions = options.python ?? {
    limits: pythonLimitsFromEnv(),
    hidePaths: [ctx.config.dataDir, ctx.config.modelsDir, process.cwd()],
  };
  const callModel = options.callModel ?? ((organization: string) => servedGraderModels(inference, organization));
  const modelExists = options.modelExists ?? (options.callModel ? async () => true : (model: string, org: string) => inference.exists(model, org));

  /** validateGrader plus what needs I/O: grader models exist, python sources parse. */
  async function checkGrader(grader: Grader, organization: string): Promise<void> {
    validateGrader(grader, { python });
    for (const [leaf, param] of leafGraders(grader)) {
      if ((leaf.type === 'score_model' || leaf.type === 'label_model') && !(await modelExists(leaf.model, organization))) {
        throw invalidParam(`${param}.model`, `The model '${leaf.model}' does not exist or is not available for grading (base models of this server, your fine-tuned models and checkpoints, and checkpoints shared with you are).`, 'model_not_found');
      }
    }
    await checkPythonSources(grader, python);
  }

  app.post<{ Body: GraderValidateParams & { grader: Grader } }>('/fine_tuning/alpha/graders/validate', { schema: { body: validateBodySchema } }, async (request) => {
    await checkGrader(request.body.grader, request.caller.organization);
    return { grader: request.body.grader };
  });

  app.post<{ Body: GraderRunParams & { grader: Grader } }>(
    '/fine_tuning/alpha/graders/run',
    { schema: { body: runBodySchema } },
    async (request) => {
      const { grader, item, model_sample } = request.body;
      const organization = request.caller.organization;
      await checkGrader(grader, organization);
      return runGrader(grader, { item: item ?? {}, modelSample: model_sample }, { callModel: callModel(organization), python });
    },
  );
}
