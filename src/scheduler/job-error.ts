// A job's failure as OpenAI reports it: the worker copies {code, param, message} into the job's `error`.
// insufficient_memory carries the engine's estimate too: the worker hands such a job to a bigger worker when one is live.

export class JobError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly param: string | null = null,
    readonly neededBytes?: number,
  ) {
    super(message);
  }
}
