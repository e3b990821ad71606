// The engine's public surface. The control plane needs only `train` and the contract types;
// the rest is for benchmarks, tools and tests that build graphs or steps directly.

export * from './contract.ts';
export { train } from './train/train.ts';
export { Graph, Tensor } from './graph/ir.ts';
export * as ops from './graph/ops.ts';
export { gradients } from './graph/autodiff.ts';
export { toOnnx } from './graph/onnx.ts';
export { CompiledGraph } from './runtime/session.ts';
export { llamaLogits, llamaWeightShapes, ropeTables } from './models/llama.ts';
export { loraTargets, initLora, type LoraSpec } from './models/lora.ts';
export { buildStepGraph, type ModelSetup, type StepShape } from './train/step.ts';
export { DEFAULT_ADAMW, type AdamWSettings } from './train/adamw.ts';
export { StepRunner, freshOptimizerState, type MicroBatch, type OptimizerState } from './train/runner.ts';
export { modelSetup, initialTensors } from './train/setup.ts';
export { baseLearningRate, makePlan } from './train/plan.ts';

// What the control plane (src/api, src/scheduler, src/domain, src/cli) uses: it reaches the engine
// only through this file (.dependency-cruiser.cjs).
export { wantsResumePoint } from './train/pause.ts';
export { EngineError, deserializeError, serializeError, type EngineErrorCode, type SerializedError } from './errors.ts';
export { readChatTemplate } from './data/tokenizer.ts';
/** Whether the engine can train a Hugging Face folder: its config.json parsed, or the reason it cannot be. */
export { readHfConfig } from './io/hf-model.ts';
export { readPeftAdapterConfig, type PeftAdapterSettings } from './io/peft.ts';
export type { ChatMessage, ToolDefinition } from './data/chat-format.ts';
export {
  InferenceHost,
  type ConstraintSpec,
  type GenerateOptions,
  type GenerationResult,
  type JsonSchema,
  type ModelInfo,
  type ModelSourceMessage,
  type OnToken,
  type TokenInfo,
  type TokenLogprob,
} from './infer/index.ts';
export { loadModelForInference, chatPrompt } from './infer/model.ts';
export { EXPORT_FORMATS, runExport, runExportInWorker, type ExportFormat, type ExportJob, type MergedDtype } from './export/index.ts';
export { tarDirectory, tarSize } from './export/tar.ts';
export { JsonlLineTooLongError, JsonlSyntaxError, jsonlLineBatches, jsonlText, parseJsonl } from './data/jsonl.ts';
