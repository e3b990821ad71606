// The grade callback of a reinforcement job (TrainOptions.grade): each sampled completion is graded
// with the job's grader by src/graders' runGrader, in the worker process (a child-process trainer
// asks its parent, see train-process.ts). Grader errors on a sample score 0, as in /graders/run.
//
// score_model / label_model graders are served by our own inference: any model the job's
// organization may use (models/catalogue.ts), loaded in an inference worker thread on first use and closed when the job ends.
// Grader models sample at temperature 0 unless the grader says otherwise (repeatable rewards).
import { InferenceHost, type RftSample } from '../engine/index.ts';
import { pythonLimitsFromEnv, runGrader, type CallModel, type GraderDeps, type Grader, type GraderModelReply, type PythonSandboxOptions } from '../graders/index.ts';
import { inferenceKey, inferenceSource, ModelCatalogue, type CatalogueModel, type OpenedModel } from '../models/catalogue.ts';
import type { Store } from '../store/index.ts';

const DEFAULT_MAX_TOKENS = 512;
/** Samples graded at once (python graders also queue on their sandbox's own limit). */
const CONCURRENCY = 4;

export interface RftGradingOptions {
  modelsDir: string;
  store: Store;
  organization: string;
  /** Replaces our own inference for grader models (tests). */
  callModel?: CallModel;
  python?: PythonSandboxOptions;
  /** Folders python grader code must not see (besides MODELS_DIR and the working directory). */
  hidePaths?: string[];
}

export interface JobGrader {
  grade: (samples: RftSample[]) => Promise<number[]>;
  close: () => Promise<void>;
}

/** Grader models on our own inference engine, resolved like /v1/fine_tuning/alpha/graders/run does. */
export function ownCallModel(opts: RftGradingOptions): { callModel: CallModel; close: () => Promise<void> } {
  let host: InferenceHost | null = null;
  const loaded = new Map<string, Promise<{ contextLength: number }>>();
  const opened: OpenedModel[] = [];
  const catalogue = new ModelCatalogue(opts.store, opts.modelsDir);
  const load = async (model: CatalogueModel, key: string) => {
    const files = await catalogue.open(model);
    opened.push(files);
    host ??= new InferenceHost();
    return host.load(key, inferenceSource(model, files).source);
  };
  const callModel: CallModel = async (model, messages, sampling): Promise<GraderModelReply> => {
    const found = await catalogue.find(model, opts.organization);
    if (!found) throw new Error(`the model '${model}' is not available`);
    const resolved = { key: inferenceKey(found) };
    let info = loaded.get(resolved.key);
    if (!info) loaded.set(resolved.key, (info = load(found, resolved.key)));
    const { contextLength } = await info;
    const promptIds = await host!.chatPrompt(resolved.key, messages);
    const room = contextLength - promptIds.length;
    if (room < 1) throw new Error(`the grader prompt (${promptIds.length} tokens) fills the model's context of ${contextLength} tokens`);
    const result = await host!.generate(resolved.key, promptIds, {
      maxTokens: Math.min(room, sampling.max_tokens ?? DEFAULT_MAX_TOKENS),
      temperature: sampling.temperature ?? 0,
      topP: sampling.top_p,
      seed: sampling.seed,
    });
    return { text: result.text, usage: { prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens }, model };
  };
  return {
    callModel,
    close: async () => {
      await host?.close();
      for (const files of opened) files.release();
    },
  };
}

/** The grade callback for a job's grader (validated when the job was created: its shape by the route schema). */
export function jobGrader(stored: unknown, opts: RftGradingOptions): JobGrader {
  const grader = stored as Grader;
  const own = opts.callModel ? null : ownCallModel(opts);
  const deps: GraderDeps = {
    callModel: opts.callModel ?? own!.callModel,
    python: opts.python ?? { limits: pythonLimitsFromEnv(), hidePaths: [opts.modelsDir, process.cwd(), ...(opts.hidePaths ?? [])] },
  };
  const grade = async (samples: RftSample[]): Promise<number[]> => {
    const rewards = new Array<number>(samples.length).fill(0);
    let next = 0;
    const lane = async () => {
      for (let i = next++; i < samples.length; i = next++) {
        const r = await runGrader(grader, { item: samples[i].item, modelSample: samples[i].outputText }, deps);
        rewards[i] = Number.isFinite(r.reward) ? r.reward : 0;
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, samples.length) }, lane));
    return rewards;
  };
  return { grade, close: async () => own?.close() };
}
