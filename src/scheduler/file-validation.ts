// File validation of a new job (status validating_files), run in the background by the API
// process: each file is checked by the datasets module (streaming), then the job moves to
// `queued` with its "auto" hyperparameters resolved, or to `failed` with error {code, param, message}.
// Jobs left validating by a crash are validated again when the server starts (api/server.ts).
// The datasets module's warnings (problems that do not stop the job) become `warn` job events.
import type { DatasetFormat, DatasetRole } from '../domain/datasets.ts';
import { parseJobMethod, resolveHyperparameters, type ParsedJobMethod } from '../domain/hyperparameters.ts';
import { nowSeconds } from '../domain/clock.ts';
import { jobEvents } from '../domain/jobs.ts';
import { blobKeys, type JobRecord, type Store } from '../store/index.ts';
import { appendEvent, applyJobAction } from './job-events.ts';

export type DatasetValidation =
  | { ok: true; nExamples: number; nTokensEstimate?: number; format?: DatasetFormat; warnings?: string[] }
  | { ok: false; error: { code: string; param: string | null; message: string; line?: number | null } };

/** The datasets module's `validateDataset`, injected so tests and the API can choose it. */
export type DatasetValidator = (
  chunks: AsyncIterable<Buffer>,
  options: { method: 'supervised' | 'dpo' | 'reinforcement'; role: DatasetRole; trainingFormat?: DatasetFormat },
) => Promise<DatasetValidation>;

/** The parsed (auto-bearing) method of a stored job, from its API form. */
export function parsedMethodOf(job: JobRecord): ParsedJobMethod {
  return parseJobMethod({ method: job.method });
}

export async function validateJobFiles(store: Store, validate: DatasetValidator, jobId: string): Promise<void> {
  const job = await store.jobs.get(jobId);
  if (!job || job.status !== 'validating_files') return;
  const parsed = parsedMethodOf(job);
  const fail = async (error: { code: string; param: string | null; message: string }) => {
    await applyJobAction(store, jobId, 'invalid', {
      patch: { error, finished_at: nowSeconds() },
      event: jobEvents.failed(error.message),
    }).catch(() => undefined); // cancelled meanwhile: nothing to do
  };

  const check = async (fileId: string, role: DatasetRole, trainingFormat?: DatasetFormat) => {
    const param = role === 'training' ? 'training_file' : 'validation_file';
    const code = role === 'training' ? 'invalid_training_file' : 'invalid_validation_file';
    const file = await store.files.get(fileId, job.organization_id, true);
    if (!file) return { ok: false as const, error: { code, param, message: `The ${role} file ${fileId} was deleted before it could be validated.` } };
    const result = await validate(store.blobs.read(blobKeys.file(fileId)), { method: parsed.type, role, trainingFormat });
    if (result.ok) return result;
    return { ok: false as const, error: { code: result.error.code || code, param: result.error.param ?? param, message: result.error.message } };
  };
  // One event per kind of problem: the datasets module already aggregates them, with their counts.
  const reportWarnings = async (tx: Store, fileId: string, role: DatasetRole, warnings: readonly string[] = []) => {
    for (const warning of warnings) await appendEvent(tx, jobId, jobEvents.datasetWarning(role, fileId, warning));
  };

  try {
    const training = await check(job.training_file, 'training');
    if (!training.ok) return fail(training.error);
    let validation: DatasetValidation | undefined;
    if (job.validation_file) {
      // Validation examples are scored as training ones are: they must use the training file's format.
      validation = await check(job.validation_file, 'validation', training.format);
      if (!validation.ok) return fail(validation.error);
    }
    const resolved = resolveHyperparameters(parsed, { nExamples: training.nExamples, nTokens: training.nTokensEstimate ?? 0 });
    const settings = { ...(job.method[job.method.type] ?? {}), hyperparameters: resolved };
    // The warnings land with the move to `queued`, or not at all (a job cancelled meanwhile).
    await store.transaction(async (tx) => {
      await reportWarnings(tx, job.training_file, 'training', training.warnings);
      if (job.validation_file && validation?.ok) await reportWarnings(tx, job.validation_file, 'validation', validation.warnings);
      await applyJobAction(tx, jobId, 'validated', {
        patch: {
          method: { ...job.method, [job.method.type]: settings },
          dataset: {
            training: { examples: training.nExamples, tokens: training.nTokensEstimate ?? null, format: training.format ?? null },
            validation: validation?.ok ? { examples: validation.nExamples, tokens: validation.nTokensEstimate ?? null, format: validation.format ?? null } : null,
          },
        },
        event: jobEvents.validated(),
      });
    });
  } catch (err) {
    // A validator crash is our bug, not the user's file: fail the job but say so plainly.
    await fail({ code: 'server_error', param: null, message: `File validation failed unexpectedly: ${(err as Error).message}` });
  }
}
