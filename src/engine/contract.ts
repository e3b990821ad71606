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
  /** Reinforcement only: completions sampled per prompt = max(2, round(4 × compute_multiplier)). */
  compute_multiplier?: number;
  /** Reinforcement only: evaluate on the validation set every this many steps. */
  eval_interval?: number;
  /** Reinforcement only: completions sampled per validation prompt at each evaluation. */
  eval_samples?: number;
  /** Reinforcement only: accepted for compatibility; the engine's models do not reason. */
  reasoning_effort?: string;
}

export interface LoraSettings {
  rank: number;
  alpha: number;
  dropout: number;
  /** HF module names, e.g. ["q_proj", "v_proj"]. */
  targetModules: string[];
}

/** Whether training recomputes decoder layers in the backward instead of keeping their activations: every layer, none, or (auto) as few as fit. */
export type RecomputePolicy = 'on' | 'off' | 'auto';

export interface TrainSpec {
  /** Absolute path of a Hugging Face model folder (config.json, *.safetensors, tokenizer files). */
  baseModelDir: string;
  /**
   * A PEFT adapter trained on baseModelDir to start from (tuning a LoRA fine-tune again): LoRA
   * continues its A and B (same rank, alpha and target modules); full fine-tuning starts from the
   * base weights with it merged in.
   */
  initialAdapterDir?: string;
  method: FineTuneMethod;
  /** Absolute paths of validated JSONL files. */
  trainingFile: string;
  validationFile?: string;
  /**
   * Names of the inputs above that do not depend on the host (the service's blob keys): a resume
   * point's fingerprint takes them instead of the paths, so another host, with the same inputs in
   * other folders, can continue the run. Absent: the paths themselves.
   */
  inputNames?: { baseModel: string; initialAdapter: string | null; trainingFile: string; validationFile: string | null };
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
  /**
   * Most bytes the training process may use: a job whose step is estimated to need more fails at
   * once with EngineError 'insufficient_memory' (see train/memory-estimate.ts). Absent: no check.
   */
  memoryLimitBytes?: number;
  /** Per-layer activation recomputation: 'auto' (default) recomputes the fewest layers with which the step fits memoryLimitBytes. */
  recompute?: RecomputePolicy;
  /** Reinforcement only: the job's grader, validated by the control plane; opaque here (see TrainOptions.grade). */
  grader?: unknown;
  /** Reinforcement only: most tokens sampled per completion (default: rft.ts DEFAULT_MAX_COMPLETION_TOKENS). */
  maxCompletionTokens?: number;
  /** Supervised only: every token of an example is a target, the prompt's too (default: only the assistant's). */
  trainOnInputs?: boolean;
  /** Longest example in tokens; longer ones are truncated (default: the model's max_position_embeddings, shortened for a supervised job to the longest row that fits memoryLimitBytes). */
  contextLength?: number;
  /** The learning rate's schedule (default: linear warmup over 5% of the steps, then linear decay to 0). */
  schedule?: LearningRateSchedule;
  /** AdamW's decoupled weight decay and global gradient-norm clip (default: train/adamw.ts DEFAULT_ADAMW). */
  optimizer?: { weightDecay: number; maxGradNorm: number };
  /** Model checkpoints spread evenly over the steps, the last at the final step (default: one per epoch). */
  nCheckpoints?: number;
  /** Evaluations on the whole validation set spread evenly over the steps (default: the method's own cadence). */
  nEvals?: number;
  /** Stop once the validation loss has not improved for this many evaluations in a row (default: never). */
  earlyStoppingPatience?: number;
}

export interface LearningRateSchedule {
  /** Share of the steps over which the rate rises linearly to its peak. */
  warmupRatio: number;
  /** After warmup: linear or cosine decay to minLrRatio × peak, or the peak throughout. */
  type: 'linear' | 'cosine' | 'constant';
  minLrRatio: number;
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
  /** Reinforcement: mean and standard deviation of the rewards of this step's samples. */
  train_reward_mean?: number;
  train_reward_std?: number;
  /** Reinforcement: mean reward on the validation prompts (at evaluation steps). */
  valid_reward_mean?: number;
  /** Reinforcement: mean per-token KL estimate of the policy from the reference. */
  kl?: number;
  /**
   * DPO: rewards β·(log π − log π_ref) of the chosen and rejected responses (means over pairs),
   * reward accuracy (share of pairs whose chosen reward is higher; also reported as
   * *_mean_token_accuracy) and margin (chosen − rejected), on the step's training pairs, the
   * validation window (valid_*) and the whole validation set at epoch ends (full_valid_*).
   */
  train_rewards_chosen?: number;
  train_rewards_rejected?: number;
  train_reward_accuracy?: number;
  train_reward_margin?: number;
  valid_rewards_chosen?: number;
  valid_rewards_rejected?: number;
  valid_reward_accuracy?: number;
  valid_reward_margin?: number;
  full_valid_rewards_chosen?: number;
  full_valid_rewards_rejected?: number;
  full_valid_reward_accuracy?: number;
  full_valid_reward_margin?: number;
}

export type TrainEvent =
  | { type: 'message'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'metrics'; metrics: StepMetrics; stepSeconds: number }
  /**
   * A checkpoint: a usable model (PEFT adapter or full weights) in `dir`. `final`: the run's last one,
   * the fine-tuned model (absent: final when `step` is `metrics.total_steps`).
   */
  | { type: 'checkpoint'; step: number; dir: string; metrics: StepMetrics; final?: boolean }
  /** A resumable state (weights, optimizer, data position, RNG) in `dir`; not a user-visible checkpoint. */
  | { type: 'resume_point'; step: number; dir: string };

export interface TrainOptions {
  /** Aborting stops training within seconds; `train` then rejects with an AbortError. */
  signal?: AbortSignal;
  onEvent?: (event: TrainEvent) => void | Promise<void>;
  /**
   * Reinforcement only: rewards for sampled completions, one per sample, in order. The control
   * plane builds it from the job's grader (the engine knows nothing of graders).
   */
  grade?: (samples: RftSample[]) => Promise<number[]>;
}

/** A completion to grade: its text and the dataset line it answers (`{{item.KEY}}`). */
export interface RftSample {
  outputText: string;
  item: Record<string, unknown>;
}

export interface TrainResult {
  /** Billable tokens: epochs × Σ min(context, tokens per example). */
  trainedTokens: number;
  steps: number;
  /** Folder of the final model (same layout as a checkpoint). */
  finalDir: string;
  finalMetrics: StepMetrics;
}
