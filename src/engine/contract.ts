// The seam between the control plane and the training engine (see ARCHITECTURE.md).
// A worker calls `train(spec, options)`; the engine knows nothing of HTTP, SQL or jobs.
// Everything here is plain data so that a worker thread or child process can carry it.

export type FineTuneMethod = 'supervised' | 'dpo' | 'reinforcement';

/** Hyperparameters with every "auto" already resolved by the control plane. */
export interface ResolvedHyperparameters {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
  /** DPO only. */
  beta?: number;
}

export interface LoraSettings {
  rank: number;
  alpha: number;
  dropout: number;
  /** HF module names, e.g. ["q_proj", "v_proj"]. */
  targetModules: string[];
}

export interface TrainSpec {
  /** Absolute path of a Hugging Face model folder (config.json, *.safetensors, tokenizer files). */
  baseModelDir: string;
  method: FineTuneMethod;
  /** Absolute paths of validated JSONL files. */
  trainingFile: string;
  validationFile?: string;
  hyperparameters: ResolvedHyperparameters;
  seed: number;
  /** LoRA settings, or null for full fine-tuning. */
  lora: LoraSettings | null;
  /** Folder the engine owns for checkpoints and scratch files. */
  outputDir: string;
  /** A step checkpoint folder written earlier by the engine for this same spec: continue from it. */
  resumeFrom?: string;
  /** Write a resumable step checkpoint every N optimizer steps (0 = only at epoch ends). */
  checkpointEverySteps?: number;
}

export interface StepMetrics {
  step: number;
  total_steps: number;
  train_loss: number;
  train_mean_token_accuracy: number;
  valid_loss?: number;
  valid_mean_token_accuracy?: number;
  full_valid_loss?: number;
  full_valid_mean_token_accuracy?: number;
}

export type TrainEvent =
  | { type: 'message'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'metrics'; metrics: StepMetrics; stepSeconds: number }
  /** An epoch-end checkpoint: a usable model (PEFT adapter or full weights) in `dir`. */
  | { type: 'checkpoint'; step: number; dir: string; metrics: StepMetrics }
  /** A resumable state (weights, optimizer, data position, RNG) in `dir`; not a user-visible checkpoint. */
  | { type: 'resume_point'; step: number; dir: string };

export interface TrainOptions {
  /** Aborting stops training within seconds; `train` then rejects with an AbortError. */
  signal?: AbortSignal;
  onEvent?: (event: TrainEvent) => void | Promise<void>;
}

export interface TrainResult {
  /** Billable tokens: epochs × Σ min(context, tokens per example). */
  trainedTokens: number;
  steps: number;
  /** Folder of the final model (same layout as a checkpoint). */
  finalDir: string;
  finalMetrics: StepMetrics;
}
