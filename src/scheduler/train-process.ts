// Training in a child process. `session.run` blocks the JS thread that calls it (ENGINE-NOTES), and
// a native crash or an out-of-memory kill must not take the API or the worker down with it, so
// each job's `train()` runs in its own Node process, forked from this file.
//
// `trainInChildProcess` has the engine's `train(spec, {signal, onEvent})` signature, so the worker
// plugs it in as `createTrainRunner(trainInChildProcess, …)`. Protocol over the IPC channel:
//   parent → child  {type: 'start', spec}            once
//                   {type: 'ack', seq}               after the parent handled event `seq`
//                   {type: 'abort'}                  stop at the next step boundary
//                   {type: 'abort', saveResumePoint}  pause: write a resume point first, and keep
//                                                    sending events (acked) until it has
//   child → parent  {type: 'event', seq, event}      the engine waits for the ack (back-pressure:
//                                                    a checkpoint is recorded before training goes on)
//                   {type: 'result', result} | {type: 'error', error: {name, message, code?}}
//                   (an EngineError keeps its code: engine/errors.ts)
//   reinforcement:  child {type: 'grade', id, samples} → parent runs options.grade → {type: 'graded', id, rewards | error}
//                   (grading stays in the parent: the grader, its sandbox and grader models live there)
// The child exits when its parent goes away (IPC disconnect), so a killed server leaves no trainer
// behind; the job's lease then expires and another worker resumes it from its last resume point.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { deserializeError, serializeError, wantsResumePoint, type RftSample, type SerializedError, type TrainEvent, type TrainOptions, type TrainResult, type TrainSpec } from '../engine/index.ts';
import { JobError } from './job-error.ts';

type ToChild =
  | { type: 'start'; spec: TrainSpec }
  | { type: 'ack'; seq: number }
  | { type: 'abort'; saveResumePoint?: boolean }
  | { type: 'graded'; id: number; rewards?: number[]; error?: string };
type FromChild =
  | { type: 'event'; seq: number; event: TrainEvent }
  | { type: 'result'; result: TrainResult }
  | { type: 'error'; error: SerializedError }
  | { type: 'grade'; id: number; samples: RftSample[] };

export interface ChildProcessOptions {
  /** After an abort, the child is killed if it has not stopped within this long (default 15 s). */
  killAfterMs?: number;
  /** After a pause, which lets the step in flight finish and writes a resume point (default 10 min). */
  pauseKillAfterMs?: number;
  /** Extra environment for the child (merged over process.env). */
  env?: Record<string, string>;
  /** Extra Node flags for the child, e.g. ['--max-old-space-size=8192']. */
  nodeArgs?: string[];
}

const HOST_FILE = fileURLToPath(import.meta.url);
const CHILD_MARK = 'TUNEFORGE_TRAIN_CHILD';

/** Node flags that let the child load TypeScript the way this process does. */
function childExecArgv(extra: string[] = []): string[] {
  return ['--import', import.meta.resolve('tsx'), ...extra];
}

/** Keeps the last `max` characters of the child's stderr, for the error of a crashed child. */
function tailKeeper(max = 4000) {
  let tail = '';
  return {
    push(chunk: Buffer) {
      tail = (tail + chunk.toString('utf8')).slice(-max);
    },
    get text() {
      return tail.trim();
    },
  };
}

function abortError(signal: AbortSignal): unknown {
  if (wantsResumePoint(signal.reason)) return new DOMException('training paused', 'AbortError');
  return signal.reason ?? new DOMException('training aborted', 'AbortError');
}

/**
 * glibc settings for the training process, unless the environment sets its own. Each step hands
 * ONNX Runtime's outputs (for full fine-tuning, 0.54 GB of gradients) to new JS buffers; by default
 * glibc maps the largest afresh every step, while from the heap the freed ones are reused: measured
 * on the SmolLM2-135M shape, 29–89k page faults per step before, about 1k from the third step on.
 * The process ends with its job, so memory it does not give back to the system meanwhile costs
 * nothing after. The heap is in transparent huge pages, which the process turns off when its step
 * is tight on memory (engine/runtime/huge-pages.ts). (bench:train runs with the same settings.)
 */
export const CHILD_GLIBC_TUNABLES = 'glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.hugetlb=1';

/** Runs `train(spec)` in a child Node process; same contract as the engine's `train`. */
export function createChildProcessTrainer(options: ChildProcessOptions = {}) {
  const killAfterMs = options.killAfterMs ?? 15_000;
  const pauseKillAfterMs = options.pauseKillAfterMs ?? 600_000;
  return (spec: TrainSpec, trainOptions: TrainOptions = {}): Promise<TrainResult> =>
    new Promise<TrainResult>((resolve, reject) => {
      const { signal, onEvent, grade } = trainOptions;
      if (signal?.aborted) return reject(abortError(signal));
      const child: ChildProcess = fork(HOST_FILE, [], {
        execArgv: childExecArgv(options.nodeArgs),
        env: { GLIBC_TUNABLES: CHILD_GLIBC_TUNABLES, ...process.env, ...options.env, [CHILD_MARK]: '1' },
        stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
        serialization: 'advanced', // structured clone: typed arrays, NaN and Infinity survive
      });
      const stderr = tailKeeper();
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr.push(chunk);
        process.stderr.write(chunk);
      });

      let settled = false;
      let outcome: { ok: true; result: TrainResult } | { ok: false; error: unknown } | null = null;
      /** Set when the parent's own event handler failed: that error wins over the child's abort. */
      let handlerError: unknown = null;
      let killTimer: NodeJS.Timeout | null = null;
      let queue = Promise.resolve();

      const send = (message: ToChild) => {
        if (child.connected) child.send(message, (err) => void err); // a dying child is handled by 'exit'
      };
      const stop = (pause = false) => {
        send({ type: 'abort', ...(pause ? { saveResumePoint: true } : {}) });
        if (!killTimer) killTimer = setTimeout(() => child.kill('SIGKILL'), pause ? pauseKillAfterMs : killAfterMs).unref();
      };
      const onAbort = () => stop(wantsResumePoint(signal?.reason));
      signal?.addEventListener('abort', onAbort, { once: true });

      child.on('message', (message: FromChild) => {
        switch (message.type) {
          case 'event':
            queue = queue.then(async () => {
              if (handlerError === null) {
                try {
                  await onEvent?.(message.event);
                } catch (err) {
                  handlerError = err;
                  stop();
                }
              }
              send({ type: 'ack', seq: message.seq });
            });
            break;
          case 'grade':
            if (!grade) send({ type: 'graded', id: message.id, error: 'this trainer was given no grader' });
            else {
              grade(message.samples).then(
                (rewards) => send({ type: 'graded', id: message.id, rewards }),
                (err: unknown) => send({ type: 'graded', id: message.id, error: (err as Error)?.message ?? String(err) }),
              );
            }
            break;
          case 'result':
            outcome = { ok: true, result: message.result };
            break;
          case 'error': {
            const e = message.error;
            const error = e.name === 'AbortError' ? new DOMException(e.message, 'AbortError') : deserializeError(e);
            outcome = { ok: false, error };
            break;
          }
        }
      });

      const finish = (code: number | null, sig: NodeJS.Signals | null, spawnError?: Error) => {
        if (settled) return;
        settled = true;
        if (killTimer) clearTimeout(killTimer);
        signal?.removeEventListener('abort', onAbort);
        // Events already received are handled before the outcome is reported.
        void queue.then(() => {
          if (handlerError !== null) return reject(handlerError);
          if (signal?.aborted) return reject(abortError(signal));
          if (outcome?.ok) return resolve(outcome.result);
          if (outcome && !outcome.ok) return reject(outcome.error);
          if (spawnError) return reject(new Error(`The training process could not start: ${spawnError.message}`));
          const how = sig ? `was killed by ${sig}` : `exited with code ${code}`;
          const hint = sig === 'SIGKILL' ? ' (most likely out of memory: try a smaller batch_size or a smaller model)' : '';
          const last = stderr.text ? `: ${stderr.text.split('\n').slice(-5).join(' | ')}` : '';
          reject(new JobError(`The training process ${how}${hint}${last}`, sig === 'SIGKILL' ? 'out_of_memory' : 'training_process_crashed'));
        });
      };
      child.on('exit', (code, sig) => finish(code, sig));
      child.on('error', (err) => {
        if (!child.pid) finish(null, null, err); // never started: no 'exit' will follow
      });
      send({ type: 'start', spec });
    });
}

/** The default child-process trainer. */
export const trainInChildProcess = createChildProcessTrainer();

// ---------------------------------------------------------------------------------------------
// The child side

async function childMain(): Promise<void> {
  const { train } = await import('../engine/index.ts');
  const controller = new AbortController();
  const acks = new Map<number, () => void>();
  let seq = 0;
  const grading = new Map<number, { resolve: (rewards: number[]) => void; reject: (err: Error) => void }>();
  let gradeSeq = 0;
  const post = (message: FromChild) =>
    new Promise<void>((resolve) => {
      if (!process.connected) return resolve();
      process.send!(message, undefined, {}, () => resolve());
    });

  // The parent is gone (killed, crashed): nobody will record what this process does. Stop now.
  process.on('disconnect', () => process.exit(70));

  process.on('message', (message: ToChild) => {
    switch (message.type) {
      case 'abort':
        if (message.saveResumePoint) {
          // Pause: the engine writes a resume point and its events still go to the parent, acked.
          controller.abort({ saveResumePoint: true });
          break;
        }
        if (!controller.signal.aborted) controller.abort(new DOMException('training aborted', 'AbortError'));
        for (const release of acks.values()) release();
        acks.clear();
        for (const pending of grading.values()) pending.reject(new DOMException('training aborted', 'AbortError'));
        grading.clear();
        break;
      case 'graded': {
        const pending = grading.get(message.id);
        grading.delete(message.id);
        if (message.rewards) pending?.resolve(message.rewards);
        else pending?.reject(new Error(`grading failed: ${message.error}`));
        break;
      }
      case 'ack':
        acks.get(message.seq)?.();
        acks.delete(message.seq);
        break;
      case 'start':
        void run(message.spec);
        break;
    }
  });

  async function run(spec: TrainSpec) {
    let reply: FromChild;
    try {
      const result = await train(spec, {
        signal: controller.signal,
        onEvent: async (event) => {
          if (controller.signal.aborted && !wantsResumePoint(controller.signal.reason)) return;
          const n = ++seq;
          const acked = new Promise<void>((resolve) => acks.set(n, resolve));
          await post({ type: 'event', seq: n, event });
          await acked;
        },
        ...(spec.method === 'reinforcement'
          ? {
              grade: (samples: RftSample[]) =>
                new Promise<number[]>((resolve, reject) => {
                  if (controller.signal.aborted) return reject(new DOMException('training aborted', 'AbortError'));
                  const id = ++gradeSeq;
                  grading.set(id, { resolve, reject });
                  void post({ type: 'grade', id, samples });
                }),
            }
          : {}),
      });
      reply = { type: 'result', result };
    } catch (err) {
      const error = serializeError(err);
      reply = { type: 'error', error: controller.signal.aborted ? { name: 'AbortError', message: error.message } : error };
    }
    await post(reply);
    process.exit(0);
  }
}

if (process.env[CHILD_MARK] === '1' && process.argv[1] === HOST_FILE && typeof process.send === 'function') {
  childMain().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
