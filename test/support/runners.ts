// Stand-in job runners for tests only. They go through the worker's contract (events, checkpoints,
// result files, abort) but train nothing: their metrics, token counts and result file are made up,
// so a test can only assert what the worker and the API make of them. Real training, and the real
// numbers, are covered end to end (test/e2e). Production never uses them.
import { randomInt } from 'node:crypto';
import { Readable } from 'node:stream';
import { jobEvents } from '../../src/domain/jobs.ts';
import type { JobRunContext, JobRunner, JobRunResult } from '../../src/scheduler/worker.ts';
import type { JobRecord } from '../../src/store/index.ts';

/** The result file every non-training run writes, named `step_metrics.csv`. */
export const MADE_UP_RESULT_CSV = 'step,train_loss\n1,1\n';

/** The made-up metrics of step `step` of `steps`: loss 1/step, accuracy rising to 1. */
export function madeUpMetrics(step: number, steps: number) {
  return { step, total_steps: steps, train_loss: 1 / step, train_mean_token_accuracy: 0.5 + step / (2 * steps) };
}

/**
 * Emits `steps` metrics events and a checkpoint every 2 steps (the last is final), writes a result
 * file, and succeeds with a random trained-token count (what the runner reported is all a test can
 * expect the API to say).
 */
export async function finishWithoutTraining(_job: JobRecord, ctx: JobRunContext, steps = 4): Promise<JobRunResult> {
  for (let step = 1; step <= steps; step++) {
    const metrics = madeUpMetrics(step, steps);
    await ctx.event(jobEvents.metrics(metrics));
    if (step % 2 === 0) await ctx.checkpoint(step, { step, train_loss: metrics.train_loss, train_mean_token_accuracy: metrics.train_mean_token_accuracy }, null, { final: step === steps });
  }
  const csv = await ctx.createResultFile('step_metrics.csv', Readable.from([Buffer.from(MADE_UP_RESULT_CSV)]));
  return { trainedTokens: randomInt(1, 1_000_000), resultFiles: [csv] };
}

/**
 * A runner that trains nothing (finishWithoutTraining) and finishes at once unless a job's metadata
 * says `mode: hold`: such a job runs until its AbortSignal fires (cancel, pause) or the test releases
 * it. It records what happened, and what each job's last completed run reported.
 */
export class NonTrainingRunner {
  readonly started: string[] = [];
  readonly aborted: string[] = [];
  readonly reported = new Map<string, JobRunResult>();
  private readonly releases = new Map<string, () => void>();

  readonly runJob: JobRunner = async (job, ctx) => {
    this.started.push(job.id);
    if (job.metadata?.mode === 'hold') {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          this.releases.delete(job.id);
          this.aborted.push(job.id);
          reject(ctx.signal.reason);
        };
        if (ctx.signal.aborted) return onAbort();
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        this.releases.set(job.id, resolve);
      });
    }
    const result = await finishWithoutTraining(job, ctx, job.metadata?.mode === 'hold' ? 2 : 4);
    this.reported.set(job.id, result);
    return result;
  };

  isHolding(jobId: string): boolean {
    return this.releases.has(jobId);
  }

  release(jobId: string): void {
    this.releases.get(jobId)?.();
    this.releases.delete(jobId);
  }

  timesStarted(jobId: string): number {
    return this.started.filter((id) => id === jobId).length;
  }
}
