// train() in a child process: events stream back in order (the engine waits for each ack), the
// result returns, abort stops the child, and a crash, an engine error or a failing event handler
// each end in a rejection that says what happened.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { TrainEvent, TrainSpec } from '../../src/engine/contract.ts';
import { EngineError } from '../../src/engine/index.ts';
import { createChildProcessTrainer, trainInChildProcess } from '../../src/scheduler/train-process.ts';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tuneforge-train-process-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const trainingFile = path.join(tmp, 'train.jsonl');
fs.writeFileSync(trainingFile, fs.readFileSync(path.join(root, 'samples/demo-train.jsonl'), 'utf8').trim().split('\n').slice(0, 8).join('\n') + '\n');

const spec = (over: Partial<TrainSpec> = {}): TrainSpec => ({
  baseModelDir: path.join(root, 'models/tiny-llama'),
  method: 'supervised',
  trainingFile,
  hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2 },
  seed: 3,
  lora: { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj'] },
  outputDir: fs.mkdtempSync(path.join(tmp, 'out-')),
  ...over,
});

describe('trainInChildProcess', () => {
  it('streams the engine events in order and returns its result', async () => {
    const events: TrainEvent[] = [];
    const result = await trainInChildProcess(spec({ checkpointEverySteps: 1 }), {
      onEvent: async (e) => {
        await new Promise((r) => setTimeout(r, 5)); // a slow handler: the child waits for it
        events.push(e);
      },
    });
    const order = events.map((e) => (e.type === 'message' ? 'message' : `${e.type}:${'step' in e ? e.step : e.metrics.step}`));
    assert.deepEqual(order.filter((o) => o !== 'message'), [
      'metrics:1', 'resume_point:1', 'metrics:2', 'resume_point:2', 'checkpoint:2', 'metrics:3', 'resume_point:3', 'metrics:4', 'checkpoint:4',
    ]);
    assert.equal(result.steps, 4);
    assert.ok(result.trainedTokens > 0);
    assert.ok(fs.existsSync(path.join(result.finalDir, 'adapter_config.json')));
  });

  it('abort: rejects with an AbortError and the child stops', async () => {
    const controller = new AbortController();
    let metrics = 0;
    await assert.rejects(
      trainInChildProcess(spec({ hyperparameters: { n_epochs: 20, batch_size: 1, learning_rate_multiplier: 1 } }), {
        signal: controller.signal,
        onEvent: (e) => {
          if (e.type === 'metrics' && ++metrics === 2) controller.abort();
        },
      }),
      (err: Error) => err.name === 'AbortError',
    );
    assert.ok(metrics < 160);
  });

  it('an engine error comes back as the error', async () => {
    await assert.rejects(trainInChildProcess(spec({ baseModelDir: path.join(tmp, 'no-such-model') }), {}), (err: Error) => err.name !== 'AbortError' && /no-such-model/.test(err.message));
  });

  it('an engine error keeps its code across the process boundary', async () => {
    const badFile = path.join(tmp, 'bad.jsonl');
    fs.writeFileSync(badFile, '{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n');
    const rejection = await trainInChildProcess(spec({ validationFile: badFile }), {}).then(
      () => assert.fail('training on a bad validation file succeeded'),
      (err: unknown) => err,
    );
    assert.ok(rejection instanceof EngineError, String(rejection));
    assert.equal(rejection.code, 'invalid_validation_file');
    assert.match(rejection.message, /bad\.jsonl: line 2/);
  });

  it('a failing event handler stops training and is the error', async () => {
    await assert.rejects(
      trainInChildProcess(spec(), {
        onEvent: (e) => {
          if (e.type === 'metrics') throw Object.assign(new Error('loss is NaN'), { code: 'training_diverged' });
        },
      }),
      { message: 'loss is NaN', code: 'training_diverged' },
    );
  });

  it('a child killed (as by the OOM killer) fails with a clear error', async () => {
    const crash = path.join(tmp, 'crash.mjs');
    fs.writeFileSync(crash, "process.on('message', () => setTimeout(() => process.kill(process.pid, 'SIGKILL'), 50));\n");
    const train = createChildProcessTrainer({ nodeArgs: ['--import', crash] });
    await assert.rejects(train(spec({ hyperparameters: { n_epochs: 50, batch_size: 1, learning_rate_multiplier: 1 } }), {}), (err: Error & { code?: string }) => {
      assert.match(err.message, /killed by SIGKILL.*out of memory/);
      assert.equal(err.code, 'out_of_memory');
      return true;
    });
  });
});
