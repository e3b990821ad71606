// Following a fine-tuning job as any API client would (the job and its events, polled): one progress
// line with step, loss and time left, and the job's messages above it. `tuneforge jobs follow` and
// `npm run demo` both show a job this way.
import type OpenAI from 'openai';
import { isTerminalStatus } from '../domain/job-status.ts';
import { clock, cyan, dim, red, stdoutIsTty } from './terminal.ts';

/** One status line, redrawn in place on a terminal; on a pipe a line every 10%, and the last one at the end. */
export class ProgressLine {
  private lastPrintedDecile = -1;
  private drawn = false;
  /** On a pipe: the latest line drawn and the latest printed. */
  private latest: string | null = null;
  private printed: string | null = null;

  draw(step: number, total: number, loss: number | null, validLoss: number | null, secondsLeft: number | null) {
    const width = 30;
    const fraction = total > 0 ? Math.min(1, step / total) : 0;
    const filled = Math.round(fraction * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const parts = [
      `${cyan(bar)} ${String(Math.round(fraction * 100)).padStart(3)}%`,
      `step ${step}/${total || '?'}`,
      `loss ${loss === null ? '–' : loss.toFixed(3)}`,
      ...(validLoss === null ? [] : [`val ${validLoss.toFixed(3)}`]),
      `left ${secondsLeft === null ? '–' : clock(secondsLeft)}`,
    ];
    const line = parts.join('  ');
    if (stdoutIsTty) {
      process.stdout.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else {
      const decile = Math.floor(fraction * 10);
      this.latest = line;
      if (decile > this.lastPrintedDecile) {
        this.lastPrintedDecile = decile;
        this.printed = line;
        console.log(line);
      }
    }
  }

  /** Prints a line above the bar. */
  say(text: string) {
    if (stdoutIsTty && this.drawn) process.stdout.write('\r\x1b[2K');
    console.log(text);
  }

  end() {
    if (stdoutIsTty && this.drawn) process.stdout.write('\n');
    if (this.latest !== this.printed) console.log(this.latest);
    this.drawn = false;
  }
}

/**
 * Shows the job's progress and messages until it ends; returns the job as it ended and the training
 * loss at each step seen.
 */
export async function followJob(client: OpenAI, jobId: string, pollMs = 400): Promise<{ job: OpenAI.FineTuning.FineTuningJob; losses: Map<number, number> }> {
  const progress = new ProgressLine();
  const seen = new Set<string>();
  const losses = new Map<number, number>();
  let step = 0;
  let total = 0;
  let validLoss: number | null = null;
  for (;;) {
    const job = await client.fineTuning.jobs.retrieve(jobId);
    const page = await client.fineTuning.jobs.listEvents(jobId, { limit: 100 });
    for (const e of [...page.data].reverse()) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      const data = (e.data ?? {}) as Record<string, number | undefined>;
      if (e.type === 'metrics') {
        if (typeof data.step === 'number' && typeof data.train_loss === 'number') losses.set(data.step, data.train_loss);
        if (typeof data.step === 'number' && data.step >= step) {
          step = data.step;
          total = data.total_steps ?? total;
        }
        if (typeof data.full_valid_loss === 'number') validLoss = data.full_valid_loss;
        else if (typeof data.valid_loss === 'number') validLoss = data.valid_loss;
      } else {
        progress.say(`${e.level === 'error' ? red('✗') : dim('·')} ${e.message}`);
      }
    }
    const left = job.status === 'succeeded' ? 0 : job.estimated_finish ? job.estimated_finish - Date.now() / 1000 : null;
    if (total > 0) progress.draw(step, total, losses.get(step) ?? null, validLoss, left);
    if (isTerminalStatus(job.status)) {
      progress.end();
      return { job, losses };
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
