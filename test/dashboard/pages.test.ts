// The dashboard's pages on a server without API keys (no sign-in) and without a trainer: jobs whose
// metrics events are written the way the worker writes them, to check what the charts make of each
// method's metrics, comparing runs, filters, a failed job's error, deleting a file, and that every control has a label.
import type OpenAI from 'openai';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { appendEvent } from '../../src/scheduler/job-events.ts';
import { BASE_MODEL, chatJsonl, startTestServer, waitFor, type TestServer } from '../support/server.ts';
import { openBrowser, type WatchedPage } from './browser.ts';

/** Step metrics as the worker records them: OpenAI's keys, then the method's own. */
function metrics(step: number, extra: Record<string, number> = {}) {
  return { level: 'info' as const, type: 'metrics' as const, message: `Step ${step}/3`, data: { step, total_steps: 3, train_loss: 3 - step / 2, train_mean_token_accuracy: step / 4, ...extra } };
}

describe('dashboard pages without API keys', () => {
  let server: TestServer;
  let browser: WatchedPage;
  let jobs: { supervised: string; preference: string };
  let failed: { id: string; message: string };
  let fileId: string;

  before(async () => {
    server = await startTestServer();
    browser = await openBrowser();
    const client = server.client();
    fileId = (await client.files.create({ file: new File([chatJsonl(10)], 'train.jsonl'), purpose: 'fine-tune' })).id;
    // The supervised job asks for a LoRA rank (a training option, an extra body key) that its page must show.
    const create = (options = {}) => client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: fileId, seed: 1, ...options } as OpenAI.FineTuning.JobCreateParams);
    jobs = { supervised: (await create({ lora_r: 4 })).id, preference: (await create()).id };
    await waitFor(() => client.fineTuning.jobs.retrieve(jobs.preference), (j) => j.status === 'queued', 20, 60_000);
    // A training file without assistant turns fails validation: a failed job with an error.
    const userOnly = JSON.stringify({ messages: [{ role: 'user', content: 'Hello?' }] });
    const badFile = await client.files.create({ file: new File([`${userOnly}\n`.repeat(10)], 'bad.jsonl'), purpose: 'fine-tune' });
    const bad = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: badFile.id });
    const badDone = await waitFor(() => client.fineTuning.jobs.retrieve(bad.id), (j) => j.status === 'failed', 20, 60_000);
    failed = { id: bad.id, message: badDone.error!.message };
    for (let step = 1; step <= 3; step++) {
      await appendEvent(server.store, jobs.supervised, metrics(step, step === 3 ? { valid_loss: 2, full_valid_loss: 1.9 } : {}));
      await appendEvent(server.store, jobs.preference, metrics(step, {
        train_loss: 3.5 - step / 3, train_mean_token_accuracy: step / 5,
        train_rewards_chosen: step / 10, train_rewards_rejected: -step / 10, train_reward_margin: step / 5, train_reward_accuracy: 0.5 + step / 10,
        train_reward_mean: step / 3, train_reward_std: 0.1, kl: step / 100,
      }));
    }
  });
  after(async () => {
    await browser?.browser.close();
    await server?.close();
  });

  it('opens on the jobs list without signing in; filters; compares two runs', async () => {
    const { page } = browser;
    await page.goto(server.url);
    await page.getByRole('row').filter({ hasText: jobs.preference }).waitFor();
    assert.equal(await page.getByLabel('API key').count(), 0);
    assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 0);

    await page.getByLabel('Status').selectOption('queued');
    assert.equal(await page.locator('tbody tr').count(), 2);
    await page.getByLabel('Status').selectOption('failed');
    assert.equal(await page.locator('tbody tr').count(), 1);
    await page.getByLabel('Status').selectOption('');

    await page.getByLabel(`Compare ${jobs.supervised}`).check();
    await page.getByLabel(`Compare ${jobs.preference}`).check();
    await page.getByRole('link', { name: 'Compare 2 jobs' }).click();
    const chart = page.locator('figure.chart[aria-label="train_loss: 3 points"]');
    await chart.waitFor();
    for (const id of Object.values(jobs)) await chart.getByText(id).waitFor(); // the legend names each run
    await page.getByLabel('Metric').selectOption('train_mean_token_accuracy');
    await page.locator('figure.chart[aria-label="train_mean_token_accuracy: 3 points"]').waitFor();
    await browser.screenshot('compare');
    assert.deepEqual(browser.errors, []);
    assert.deepEqual(browser.outside, []);
  });

  it("charts every metric a job emits: losses, accuracies, DPO's rewards and margin, reinforcement's reward and KL", async () => {
    const { page } = browser;
    await page.goto(`${server.url}/#/jobs/${jobs.preference}`);
    for (const title of ['Loss', 'Token accuracy', 'Rewards (chosen, rejected, margin)', 'Reward accuracy', 'Reward', 'KL from the reference']) {
      await page.locator(`figure.chart[aria-label="${title}: 3 points"]`).waitFor();
    }
    await page.goto(`${server.url}/#/jobs/${jobs.supervised}`);
    const loss = page.locator('figure.chart[aria-label="Loss: 3 points"]');
    for (const series of ['train_loss', 'valid_loss', 'full_valid_loss']) await loss.getByText(series, { exact: true }).waitFor();
    assert.equal(await page.locator('dt:text-is("lora_r") + dd').textContent(), '4');
    assert.equal(await page.locator('dt:text-is("lr_scheduler") + dd').textContent(), '{"lr_scheduler_type":"linear","lr_scheduler_args":{"min_lr_ratio":0}}');
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('.status', { hasText: 'cancelled' }).waitFor();
    assert.deepEqual(browser.errors, []);
  });

  it("shows a failed job's error", async () => {
    const { page } = browser;
    await page.goto(`${server.url}/#/jobs/${failed.id}`);
    await page.getByRole('alert').filter({ hasText: failed.message }).waitFor();
    await browser.screenshot('job-failed');
    assert.deepEqual(browser.errors, []);
  });

  it('is usable by keyboard: Tab reaches the navigation and the create-job link, Enter follows it', async () => {
    const { page } = browser;
    await page.goto(`${server.url}/#/jobs`);
    await page.reload(); // focus starts at the top of a freshly loaded page
    await page.getByRole('row').filter({ hasText: jobs.preference }).waitFor();
    const reached: string[] = [];
    for (let i = 0; i < 12 && !reached.includes('Create job'); i++) {
      await page.keyboard.press('Tab');
      reached.push(await page.evaluate(() => document.activeElement?.textContent?.trim() ?? ''));
    }
    for (const name of ['Jobs', 'Files', 'Models', 'Playground', 'Create job']) assert.ok(reached.includes(name), `${name} in ${JSON.stringify(reached)}`);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Create a fine-tuning job' }).waitFor();
  });

  it('labels every control, and deletes a file after asking', async () => {
    const { page } = browser;
    for (const route of ['#/jobs/new', '#/files', '#/playground', '#/jobs']) {
      await page.goto(`${server.url}/${route}`);
      await page.locator('main section').first().waitFor();
      const unlabelled = await page.locator('input, select, textarea, button').evaluateAll((controls) =>
        controls
          .filter((c) => !c.getAttribute('aria-label') && (c.tagName === 'BUTTON' ? !c.textContent?.trim() : !(c as HTMLInputElement).labels?.length))
          .map((c) => c.outerHTML),
      );
      assert.deepEqual(unlabelled, [], route);
    }
    await page.goto(`${server.url}/#/files`);
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Delete train.jsonl' }).click();
    await page.getByRole('cell', { name: 'train.jsonl', exact: true }).waitFor({ state: 'detached' });
    await assert.rejects(server.client().files.retrieve(fileId), /404/);
    assert.deepEqual(browser.errors, []);
  });
});
