// Grader objects as in OpenAI's spec (GraderStringCheck, GraderTextSimilarity, GraderPython,
// GraderScoreModel, GraderLabelModel, GraderMulti) and the RunGraderResponse shape.
import type { EvaluationMetric } from './similarity.ts';

export type EvalContentPart =
  | string
  | { type: 'input_text'; text: string }
  | { type: 'output_text'; text: string }
  | { type: 'input_image'; image_url: string; detail?: string }
  | { type: 'input_audio'; input_audio: { data: string; format: string } };

export interface EvalItem {
  type?: 'message';
  role: 'user' | 'assistant' | 'system' | 'developer';
  content: EvalContentPart | EvalContentPart[];
}

export interface StringCheckGrader {
  type: 'string_check';
  name: string;
  input: string;
  reference: string;
  operation: 'eq' | 'ne' | 'like' | 'ilike';
}

export interface TextSimilarityGrader {
  type: 'text_similarity';
  name: string;
  input: string;
  reference: string;
  evaluation_metric: EvaluationMetric;
  /** As in evals: reported as scores.passed; the reward stays the metric. */
  pass_threshold?: number;
}

export interface PythonGrader {
  type: 'python';
  name: string;
  source: string;
  /** Accepted and ignored: the sandbox uses the server's python3. */
  image_tag?: string;
  pass_threshold?: number;
}

export interface SamplingParams {
  seed?: number | null;
  top_p?: number | null;
  temperature?: number | null;
  max_completions_tokens?: number | null;
  reasoning_effort?: string | null;
}

export interface ScoreModelGrader {
  type: 'score_model';
  name: string;
  model: string;
  input: EvalItem[];
  range?: [number, number];
  sampling_params?: SamplingParams;
  pass_threshold?: number;
}

export interface LabelModelGrader {
  type: 'label_model';
  name: string;
  model: string;
  input: EvalItem[];
  labels: string[];
  passing_labels: string[];
}

export type LeafGrader = StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader;

export interface MultiGrader {
  type: 'multi';
  name: string;
  /** A map of name → grader (as OpenAI's API takes it), or a single grader (as its spec types it). */
  graders: Record<string, LeafGrader> | LeafGrader;
  calculate_output: string;
}

export type Grader = LeafGrader | MultiGrader;

export interface GraderErrors {
  formula_parse_error: boolean;
  sample_parse_error: boolean;
  truncated_observation_error: boolean;
  unresponsive_reward_error: boolean;
  invalid_variable_error: boolean;
  other_error: boolean;
  python_grader_server_error: boolean;
  python_grader_server_error_type: string | null;
  python_grader_runtime_error: boolean;
  python_grader_runtime_error_details: string | null;
  model_grader_server_error: boolean;
  model_grader_refusal_error: boolean;
  model_grader_parse_error: boolean;
  model_grader_server_error_details: string | null;
}

export const noErrors = (): GraderErrors => ({
  formula_parse_error: false,
  sample_parse_error: false,
  truncated_observation_error: false,
  unresponsive_reward_error: false,
  invalid_variable_error: false,
  other_error: false,
  python_grader_server_error: false,
  python_grader_server_error_type: null,
  python_grader_runtime_error: false,
  python_grader_runtime_error_details: null,
  model_grader_server_error: false,
  model_grader_refusal_error: false,
  model_grader_parse_error: false,
  model_grader_server_error_details: null,
});

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cached_tokens: number;
}

export interface RunGraderResponse {
  reward: number;
  metadata: {
    name: string;
    type: string;
    errors: GraderErrors;
    execution_time: number;
    scores: Record<string, unknown>;
    token_usage: number | null;
    sampled_model_name: string | null;
  };
  sub_rewards: Record<string, number>;
  model_grader_token_usage_per_model: Record<string, TokenUsage>;
}

/** One chat message for a grader model (text only). */
export interface GraderModelMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface GraderModelSampling {
  temperature?: number;
  top_p?: number;
  seed?: number;
  max_tokens?: number;
}

export interface GraderModelReply {
  text: string;
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** The model that answered (defaults to the one asked). */
  model?: string;
}

/** Asks `model` for a chat completion: the runner's only way to reach a model. */
export type CallModel = (model: string, messages: GraderModelMessage[], sampling: GraderModelSampling) => Promise<string | GraderModelReply>;
