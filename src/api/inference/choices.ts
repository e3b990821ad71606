// One scaffold for what /v1/chat/completions and /v1/completions answer: a set of choices (n per
// prompt), each a generation in the inference worker, all started at once; the answer whole, or
// streamed as server-sent chunks and ended by `data: [DONE]`; usage; generations stopped when the
// client leaves or one of them fails. Each endpoint says only how its objects look.
import { randomBytes } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { GenerateOptions, GenerationResult, OnToken } from '../../engine/index.ts';
import type { InferenceService } from './service.ts';
import { abandon, disconnectSignal, EventStream } from './sse.ts';

export interface Choice {
  /** The choice's index in the response. */
  index: number;
  promptIds: number[];
  /** Everything but the signal, which the scaffold adds. */
  options: Omit<GenerateOptions, 'signal'>;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** One streamed choice: its tokens as they come, and its last chunks once it ended. */
export interface ChoiceStream {
  onToken: OnToken;
  finish(result: GenerationResult): void;
}

export interface ChoicesResponse {
  choices: Choice[];
  /** The prompts' tokens, each counted once however many choices it has. */
  promptTokens: number;
  stream: boolean;
  /** Streamed: a last chunk with no choices and the usage. */
  includeUsage: boolean;
  /** The whole answer, from the results in `choices`' order. */
  whole(results: GenerationResult[], usage: Usage): unknown;
  /** A streamed chunk carrying these choice deltas (and `extra` fields, e.g. usage). */
  chunk(choiceDeltas: unknown[], extra?: { usage: Usage }): unknown;
  /** Starts streaming one choice: sends its first deltas through `send` and handles its tokens. */
  streamChoice(choice: Choice, send: (choiceDelta: unknown) => void): ChoiceStream;
}

export function responseId(prefix: string): string {
  return prefix + randomBytes(18).toString('base64url').replace(/[-_]/g, 'x');
}

/** Generates every choice with the model loaded under `modelKey` and answers the request. */
export async function respondWithChoices(service: InferenceService, request: FastifyRequest, reply: FastifyReply, modelKey: string, response: ChoicesResponse) {
  const generations = disconnectSignal(request, reply);
  const generate = (choice: Choice, onToken?: OnToken) => service.generate(modelKey, choice.promptIds, { ...choice.options, signal: generations.signal }, onToken);
  const usage = (results: GenerationResult[]): Usage => {
    const completion = results.reduce((sum, r) => sum + r.completionTokens, 0);
    return { prompt_tokens: response.promptTokens, completion_tokens: completion, total_tokens: response.promptTokens + completion };
  };

  if (!response.stream) {
    const results = await service.settle(generations, () => Promise.all(response.choices.map((choice) => generate(choice))));
    if (!results) return abandon(reply); // the client left: nothing to answer
    return response.whole(results, usage(results));
  }

  const events = new EventStream(reply);
  const streamed = async (choice: Choice) => {
    const stream = response.streamChoice(choice, (delta) => events.send(response.chunk([delta])));
    const result = await generate(choice, stream.onToken);
    stream.finish(result);
    return result;
  };
  try {
    const results = await service.settle(generations, () => Promise.all(response.choices.map(streamed)));
    if (results && response.includeUsage) events.send(response.chunk([], { usage: usage(results) }));
    events.end();
  } catch (error) {
    events.fail(error);
  }
  return reply;
}
