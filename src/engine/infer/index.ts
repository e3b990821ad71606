// Inference: load a model (base, full fine-tune, or base + LoRA adapter), render chat prompts,
// generate with a KV cache, and host models in a worker thread for the HTTP server.

export {
  loadModelForInference, loadSharedBase, chatPrompt, textPrompt, mergeLoraAdapter, loraRankBucket,
  type InferenceModel, type InferenceOptions, type ModelSource, type SharedBaseModel,
} from './model.ts';
export type { GenerateOptions, GenerationResult, FinishReason, OnToken, TokenInfo, TokenLogprob, TopLogprob } from './generate.ts';
export { InferenceHost, type HostLoadOptions, type ModelInfo, type ModelSourceMessage } from './thread.ts';
export { DecoderSteps, MAX_CHUNK } from './steps.ts';
export { KvCache } from './kv-cache.ts';
export { buildDecoderStep, inferenceWeights, inferenceWeightShapes } from './decoder.ts';
export type { ConstraintSpec, JsonSchema } from './constraints/index.ts';
