// Debian's chromium (never a downloaded browser), headless, driven by playwright-core, with a page
// that records what a person would not want to see: console errors, page errors, and any request
// that would leave the machine (those are aborted and fail the test).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const SCREENSHOTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'screenshots');

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export interface WatchedPage {
  browser: Browser;
  page: Page;
  /**
   * Console errors, uncaught page errors and 5xx responses, in order. A 4xx is the API answering
   * (no key yet, a wrong key, a form's invalid value), which the page shows: Chromium's console
   * line for it is not an error of the page.
   */
  errors: string[];
  /** Requests to anything but the loopback interface (aborted). */
  outside: string[];
  /** The whole page, or what the window shows with `{ fullPage: false }`. */
  screenshot(name: string, options?: { fullPage: boolean }): Promise<string>;
}

const isLoopback = (url: URL) => ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) || url.protocol === 'data:' || url.protocol === 'blob:';

export async function openBrowser(): Promise<WatchedPage> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const errors: string[] = [];
  const outside: string[] = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (isLoopback(url)) return route.continue();
    outside.push(url.href);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) errors.push(`console: ${msg.text()}`);
  });
  page.on('response', (res) => res.status() >= 500 && errors.push(`${res.status()} from ${res.request().method()} ${res.url()}`));
  page.on('pageerror', (err) => errors.push(`page: ${err.message}`));
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  return {
    browser,
    page,
    errors,
    outside,
    async screenshot(name, { fullPage } = { fullPage: true }) {
      const file = path.join(SCREENSHOTS, `${name}.png`);
      await page.screenshot({ path: file, fullPage });
      return file;
    },
  };
}
