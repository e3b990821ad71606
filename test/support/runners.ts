// Stand-in job runners for tests only: they exercise the worker's contract (events, checkpoints,
// result files, abort) without training anything. Production never uses them.
import { Readable } from 'node:stream';
import { jobEvents } from '../../src/domain/jobs.ts';
import type { JobRunContext, JobRunner } from '../../src/scheduler/worker.ts';
import type { JobRecord } from '../../src/store/index.ts';

/** Emits `steps` metrics events and a checkpoint every 2 steps (the last is final), writes a result file, succeeds. */
export async function runInstantly(_job: JobRecord, ctx: JobRunContext, steps = 4) {
  for (let step = 1; step <= steps; step++) {
    const metrics = { step, total_steps: steps, train_loss: 1 / step, train_mean_token_accuracy: 0.5 + step / (2 * steps) };
    await ctx.event(jobEvents.metrics(metrics));
    if (step % 2 === 0) await ctx.checkpoint(step, { step, train_loss: metrics.train_loss, train_mean_token_accuracy: metrics.train_mean_token_accuracy }, null, { final: step === steps });
  }
  const csv = await ctx.createResultFile('step_metrics.csv', Readable.from([Buffer.from('step,train_loss\n1,1\n')]));
  return { trainedTokens: 1234, resultFiles: [csv] };
}

/**
 * A runner that finishes at once unless a job's metadata says `mode: hold`: such a job runs until
 * its AbortSignal fires (cancel, pause) or the test releases it. `runs` tells what happened.
 */
export class ScriptedRunner {
  readonly started: string[] = [];
  readonly aborted: string[] = [];
  private readonly releases = new Map<string, () => void>();

  readonly runJob: JobRunner = async (job, ctx) => {
    this.started.push(job.id);
    if (job.metadata?.mode !== 'hold') return runInstantly(job, ctx);
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
    return runInstantly(job, ctx, 2);
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
