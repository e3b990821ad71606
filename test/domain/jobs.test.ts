import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/domain/errors.ts';
import { canTransition, jobEvents, nextStatus, type JobAction } from '../../src/domain/jobs.ts';
import { JOB_STATUSES, isTerminalStatus, type JobStatus } from '../../src/domain/job-status.ts';

const LEGAL: Array<[JobStatus, JobAction, JobStatus]> = [
  ['validating_files', 'validated', 'queued'],
  ['validating_files', 'invalid', 'failed'],
  ['queued', 'start', 'running'],
  ['running', 'succeed', 'succeeded'],
  ['validating_files', 'fail', 'failed'],
  ['queued', 'fail', 'failed'],
  ['running', 'fail', 'failed'],
  ['paused', 'fail', 'failed'],
  ['validating_files', 'cancel', 'cancelled'],
  ['queued', 'cancel', 'cancelled'],
  ['running', 'cancel', 'cancelled'],
  ['paused', 'cancel', 'cancelled'],
  ['running', 'pause', 'paused'],
  ['paused', 'resume', 'queued'],
  ['running', 'requeue', 'queued'],
];
const ACTIONS: JobAction[] = ['validated', 'invalid', 'start', 'succeed', 'fail', 'cancel', 'pause', 'resume', 'requeue'];

test('nextStatus: every legal transition', () => {
  for (const [from, action, to] of LEGAL) {
    assert.equal(nextStatus(from, action), to, `${from} --${action}-->`);
    assert.ok(canTransition(from, action));
  }
});

test('nextStatus: every other (status, action) pair is rejected with invalid_job_status', () => {
  let rejected = 0;
  for (const status of JOB_STATUSES) {
    for (const action of ACTIONS) {
      if (LEGAL.some(([f, a]) => f === status && a === action)) continue;
      assert.equal(canTransition(status, action), false);
      assert.throws(() => nextStatus(status, action), (err: unknown) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.status, 400);
        assert.equal(err.code, 'invalid_job_status');
        assert.match(err.message, new RegExp(`with status ${status};`));
        return true;
      });
      rejected++;
    }
  }
  assert.equal(rejected, JOB_STATUSES.length * ACTIONS.length - LEGAL.length);
});

test('nextStatus: terminal states accept nothing', () => {
  for (const status of ['succeeded', 'failed', 'cancelled'] as const) {
    assert.ok(isTerminalStatus(status));
    for (const action of ACTIONS) assert.equal(canTransition(status, action), false);
  }
  assert.equal(isTerminalStatus('paused'), false);
});

test('nextStatus: messages say why', () => {
  const message = (status: JobStatus, action: JobAction) => {
    try {
      nextStatus(status, action);
    } catch (err) {
      return (err as Error).message;
    }
    return '';
  };
  assert.equal(message('succeeded', 'pause'), 'Cannot pause a job with status succeeded; the job has already completed.');
  assert.equal(message('cancelled', 'cancel'), 'Cannot cancel a job with status cancelled; the job has already been cancelled.');
  assert.equal(message('failed', 'resume'), 'Cannot resume a job with status failed; the job has already failed.');
  assert.equal(message('queued', 'pause'), 'Cannot pause a job with status queued; only jobs with status running can be paused.');
  assert.equal(message('running', 'resume'), 'Cannot resume a job with status running; only jobs with status paused can be resumed.');
  assert.equal(message('queued', 'succeed'), 'Cannot complete a job with status queued; only jobs with status running can be completed.');
});

test('jobEvents: lifecycle messages worded as OpenAI', () => {
  assert.deepEqual(jobEvents.created('ftjob-abc'), { level: 'info', type: 'message', message: 'Created fine-tuning job: ftjob-abc', data: {} });
  assert.equal(jobEvents.validating('file-t').message, 'Validating training file: file-t');
  assert.equal(jobEvents.validating('file-t', null).message, 'Validating training file: file-t');
  assert.equal(jobEvents.validating('file-t', 'file-v').message, 'Validating training file: file-t and validation file: file-v');
  assert.equal(jobEvents.validated().message, 'Files validated, moving job to queued state');
  assert.equal(jobEvents.started().message, 'Fine-tuning job started');
  assert.equal(
    jobEvents.checkpointCreated(100, 'ft:tiny:acme::abcd1234:ckpt-step-100').message,
    'Checkpoint created at step 100 with Snapshot ID: ft:tiny:acme::abcd1234:ckpt-step-100',
  );
  assert.equal(jobEvents.newModel('ft:tiny:acme::abcd1234').message, 'New fine-tuned model created: ft:tiny:acme::abcd1234');
  assert.equal(jobEvents.succeeded().message, 'The job has successfully completed');
  assert.deepEqual(jobEvents.failed('Invalid file format.'), { level: 'error', type: 'message', message: 'The job failed: Invalid file format.', data: {} });
  assert.equal(jobEvents.cancelled().message, 'The job has been cancelled');
  assert.equal(jobEvents.paused().message, 'The job has been paused');
  assert.equal(jobEvents.resumed().message, 'The job has been resumed');
  assert.equal(jobEvents.requeued().level, 'warn');
  for (const e of [jobEvents.started(), jobEvents.succeeded(), jobEvents.cancelled()]) assert.equal(e.type, 'message');
});

test('jobEvents.metrics: message and data', () => {
  const train = jobEvents.metrics({ step: 12, total_steps: 300, train_loss: 0.5312, train_mean_token_accuracy: 0.8 });
  assert.deepEqual(train, {
    level: 'info',
    type: 'metrics',
    message: 'Step 12/300: training loss=0.53',
    data: { step: 12, total_steps: 300, train_loss: 0.5312, train_mean_token_accuracy: 0.8 },
  });
  const valid = jobEvents.metrics({
    step: 30, total_steps: 30, train_loss: 0.1, train_mean_token_accuracy: 0.9,
    valid_loss: 0.456, valid_mean_token_accuracy: 0.85, full_valid_loss: 0.5, full_valid_mean_token_accuracy: 0.84,
  });
  assert.equal(valid.message, 'Step 30/30: training loss=0.10, validation loss=0.46, full validation loss=0.50');
  assert.deepEqual(valid.data, {
    step: 30, total_steps: 30, train_loss: 0.1, train_mean_token_accuracy: 0.9,
    valid_loss: 0.456, valid_mean_token_accuracy: 0.85, full_valid_loss: 0.5, full_valid_mean_token_accuracy: 0.84,
  });
  const fullOnly = jobEvents.metrics({ step: 5, total_steps: 10, train_loss: 1, train_mean_token_accuracy: 0.5, full_valid_loss: 2 });
  assert.equal(fullOnly.message, 'Step 5/10: training loss=1.00, full validation loss=2.00');
});
