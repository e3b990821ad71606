// The dashboard as a person uses it, in real headless Chromium against a server that trains the
// bundled tiny model: sign in, upload the files, a create-job form error shown on its field, create
// the job, watch its charts gain points while it trains, pause and resume it, open a checkpoint
// export it, share it, and chat with it beside the base model. No console errors, no request leaves the machine.
// Screenshots go to test/dashboard/screenshots/ (gitignored).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, BASE_MODEL, VALID_JSONL, allEvents, startTrainingServer } from '../e2e/support.ts';
import { waitFor, type TestServer } from '../support/server.ts';
import { openBrowser, type WatchedPage } from './browser.ts';

const KEY = 'sk-dashboard-admin';
/** The whole demo set (42 examples) for twelve epochs at batch size 1 (504 steps): a job long enough to
 * watch and to pause while it trains (three epochs, 126 steps, could end in 5 s, before the click). */
const TRAIN_JSONL = fs.readFileSync(path.join(ROOT, 'samples', 'demo-train.jsonl'), 'utf8');
const TRAINING_DEADLINE_MS = 600_000;

describe('dashboard in Chromium', () => {
  let server: TestServer;
  let browser: WatchedPage;

  before(async () => {
    server = await startTrainingServer({ env: { ADMIN_API_KEYS: `${KEY}:org-dashboard` }, checkpointEverySteps: 40 });
    browser = await openBrowser();
  });
  after(async () => {
    await browser?.browser.close();
    await server?.close();
  });

  it('signs in, uploads, creates a job, watches it train, pauses and resumes it, chats with a checkpoint', async () => {
    try {
      await personUsesTheDashboard();
    } catch (err) {
      await browser.screenshot('failure'); // what the page showed when it failed
      throw err;
    }
    assert.deepEqual(browser.errors, [], 'no console errors');
    assert.deepEqual(browser.outside, [], 'no request left the machine');
  });

  async function personUsesTheDashboard() {
    const { page } = browser;
    await page.goto(server.url);

    // Sign in: a wrong key is refused with the server's message; the right one is kept.
    await page.getByLabel('API key').fill('sk-wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Incorrect API key' }).waitFor();
    await page.getByLabel('API key').fill(KEY);
    await page.keyboard.press('Enter'); // by keyboard: the field is a form's
    await page.getByText('No fine-tuning jobs yet.').waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('tuneforge.apiKey')), KEY);
    assert.doesNotMatch(page.url(), /sk-/);

    // Files: upload both, each with its progress bar, and see them listed.
    await page.getByRole('link', { name: 'Files' }).click();
    for (const [name, content] of [['train.jsonl', TRAIN_JSONL], ['valid.jsonl', VALID_JSONL]]) {
      await page.getByLabel('File', { exact: true }).setInputFiles({ name, mimeType: 'application/jsonl', buffer: Buffer.from(content) });
      await page.getByRole('button', { name: 'Upload' }).click();
      await page.getByRole('status').filter({ hasText: `Uploaded ${name}` }).waitFor();
    }
    await page.getByRole('cell', { name: 'valid.jsonl', exact: true }).waitFor();
    await browser.screenshot('files');
    const files = (await server.client(KEY).files.list()).data;
    const trainId = files.find((f) => f.filename === 'train.jsonl')!.id;
    const validId = files.find((f) => f.filename === 'valid.jsonl')!.id;

    // Create job: the API's 400 lands on the field it is about.
    await page.getByRole('link', { name: 'Jobs' }).click();
    await page.getByRole('link', { name: 'Create job' }).click();
    await page.getByLabel('Base model').selectOption(BASE_MODEL);
    await page.getByLabel('Training file').selectOption(trainId);
    await page.getByLabel('Validation file (optional)').selectOption(validId);
    await page.getByLabel('n_epochs').fill('0');
    await page.getByRole('button', { name: 'Create job' }).click();
    const epochsError = page.locator('#e-n_epochs');
    await epochsError.waitFor();
    assert.match(await epochsError.innerText(), /n_epochs/);
    assert.equal(await page.getByLabel('n_epochs').getAttribute('aria-invalid'), 'true');
    await browser.screenshot('create-job-error');
    await page.getByLabel('n_epochs').fill('12');
    await page.getByLabel('batch_size').fill('1');
    await page.getByLabel('learning_rate_multiplier').fill('2');
    await page.getByLabel('Seed').fill('7');
    await page.getByRole('button', { name: 'Create job' }).click();
    await page.waitForURL(/#\/jobs\/ftjob-/);
    const jobId = decodeURIComponent(/#\/jobs\/([^/?]+)/.exec(page.url())![1]);

    // The loss chart gains points while the job trains.
    const lossChart = page.locator('figure.chart[aria-label^="Loss"]');
    const points = async () => Number(await lossChart.getAttribute('data-points'));
    await lossChart.waitFor({ timeout: 120_000 });
    const first = await points();
    await page.waitForFunction((n) => Number(document.querySelector('figure.chart[aria-label^="Loss"]')?.getAttribute('data-points')) >= n + 3, first, { timeout: 120_000 });
    assert.ok((await points()) > first, 'the chart gained points');
    await page.locator('figure.chart[aria-label^="Token accuracy"]').waitFor();
    await browser.screenshot('job-training');

    // Pause, then resume: the job continues and succeeds.
    await page.getByRole('button', { name: 'Pause' }).click();
    await page.locator('.status', { hasText: 'paused' }).first().waitFor({ timeout: 60_000 });
    // The worker lets the job go once it has written the resume point (a resume before that would
    // find the job still training in the same run).
    await waitFor(() => server.store.jobs.get(jobId), (j) => j?.status === 'paused' && !!j.resume_point, 50, 60_000);
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.locator('.status', { hasText: /queued|running/ }).first().waitFor({ timeout: 60_000 });
    await page.locator('.status', { hasText: 'succeeded' }).first().waitFor({ timeout: TRAINING_DEADLINE_MS });
    const messages = (await allEvents(server.client(KEY), jobId)).map((e) => e.message);
    const continued = messages.find((m) => m.startsWith('Training continues from its last resume point'));
    assert.ok(continued, `the job continued from a resume point:\n${messages.join('\n')}`);
    await page.getByText(continued).waitFor();
    await page.getByRole('columnheader', { name: 'full_valid_loss', exact: true }).first().waitFor(); // the result file's table
    await browser.screenshot('job-succeeded');
    await page.evaluate(() => scrollTo(0, 0));
    await browser.screenshot('job-page', { fullPage: false }); // README's picture (docs/dashboard-job.png)
    const job = await server.client(KEY).fineTuning.jobs.retrieve(jobId);
    assert.equal(job.status, 'succeeded');

    // A checkpoint: open it, then chat with it beside the base model.
    const checkpoints = (await server.client(KEY).fineTuning.jobs.checkpoints.list(jobId)).data;
    const earliest = checkpoints.reduce((a, b) => (a.step_number < b.step_number ? a : b));
    await page.getByRole('button', { name: `Open step ${earliest.step_number}` }).click();
    // Its export downloads through the API with the key; sharing (an admin key) lists the project.
    await page.getByLabel('Export format').selectOption('peft');
    const [exported] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.getByRole('button', { name: 'Download', exact: true }).click()]);
    assert.match(exported.suggestedFilename(), /ckpt-step-\d+-peft\.tar$/);
    assert.ok(fs.statSync(await exported.path()).size > 0);
    await page.getByLabel('Share with project').fill('proj_dashboard');
    await page.getByRole('button', { name: 'Share', exact: true }).click();
    await page.getByRole('button', { name: 'Stop sharing' }).waitFor();
    const shared = await server.client(KEY).fineTuning.checkpoints.permissions.retrieve(earliest.fine_tuned_model_checkpoint);
    assert.deepEqual(shared.data.map((p) => p.project_id), ['proj_dashboard']);
    await browser.screenshot('checkpoint');
    await page.getByRole('link', { name: 'Chat with this checkpoint' }).click();
    await page.waitForURL(/#\/playground/);
    await page.getByLabel('Right model').waitFor();
    assert.equal(await page.getByLabel('Right model').inputValue(), earliest.fine_tuned_model_checkpoint);
    assert.equal(await page.getByLabel('Left model').inputValue(), BASE_MODEL);
    await page.getByLabel('Message', { exact: true }).fill('Hello, who are you?');
    await page.getByLabel('Max tokens').fill('16');
    await page.getByRole('button', { name: 'Send to both' }).click();
    for (const model of [BASE_MODEL, earliest.fine_tuned_model_checkpoint]) {
      const pane = page.getByRole('article', { name: `Answer of ${model}` });
      await pane.and(page.locator('[aria-busy="false"]')).waitFor({ timeout: 120_000 });
      assert.ok((await pane.locator('.answer').innerText()).trim().length > 0, `${model} answered`);
      assert.equal(await pane.getByRole('alert').count(), 0);
    }
    await browser.screenshot('playground');

    // The jobs list shows the finished job.
    await page.getByRole('link', { name: 'Jobs' }).click();
    await page.getByRole('row').filter({ hasText: jobId }).locator('.status', { hasText: 'succeeded' }).waitFor();
    await browser.screenshot('jobs');
  }
});
