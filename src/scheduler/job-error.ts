// A job's failure as OpenAI reports it: the worker copies {code, param, message} into the job's `error`.

export class JobError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}
