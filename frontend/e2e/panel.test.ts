// The operator's path through the panel, against the real server and the fake CPA:
// setup wizard → login → dashboard → monitor filter → redacted failure → prices → export download
// → Chinese and dark → logout, with screenshots of every page in both themes at desktop
// and phone width, no console error anywhere, and one broken card leaving the rest intact.
import { readFileSync } from 'node:fs';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Page } from 'playwright-core';

import {
  launchChromium,
  screenshotPath,
  settle,
  startFakeCpa,
  startPriceSource,
  startServer,
  watchConsole,
  type Browser,
  type ConsoleProblem,
  type FakeCpa,
  type PriceSource,
  type Server,
} from './harness';

let cpa: FakeCpa;
let server: Server;
let prices: PriceSource;
/** What the fake CPA's models cost (input, output; USD per 1M tokens) in the local price list. */
const PRICE_LIST: Record<string, [number, number]> = {
  'gpt-5.5': [1.25, 10],
  'gpt-5.5-mini': [0.25, 2],
  'claude-sonnet-4-6': [3, 15],
  'gemini-2.5-pro': [1.25, 10],
  'deepseek/deepseek-chat': [0.27, 1.1],
  'grok-4': [3, 15],
  'gpt-image-2': [5, 40],
};
let browser: Browser;
let page: Page;
const problems: ConsoleProblem[] = [];
/** URL parts whose failed responses are expected at this moment of the test. */
let allowed: string[] = [];
/** Routes this server does not have yet: the panel shows "not available" for them. */
const MISSING_ROUTES: string[] = [];

const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
let emitted = 0;
let secrets: string[] = [];
let secretRequest = '';
let exported = '';

/** Opens a page with a fresh load (a hash change alone would keep the old page's data). */
async function go(hash: string) {
  const target = `${server.url}/management.html${hash}`;
  if (page.url() === target) await page.reload();
  else await page.goto(target);
  await settle(page);
}

async function refreshUntil(check: () => Promise<boolean>, what: string) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (await check()) return;
    await page.getByTestId('refresh-all').click();
    await settle(page);
    await page.waitForTimeout(500);
  }
  throw new Error(`never saw ${what}`);
}

beforeAll(async () => {
  cpa = await startFakeCpa();
  prices = await startPriceSource(PRICE_LIST);
  // Price syncs read the local list only: no test reaches the internet.
  server = await startServer({
    MODEL_PRICE_SYNC_MODELS_DEV_URL: 'off',
    MODEL_PRICE_SYNC_LITELLM_URL: prices.url,
    MODEL_PRICE_SYNC_OPENROUTER_URL: 'off',
  });
  browser = await launchChromium();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  watchConsole(page, problems, () => [...allowed, ...MISSING_ROUTES]);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await cpa?.stop();
  await prices?.stop();
});

/** The dashboard's cost today, in dollars; NaN while it is unknown (`—`). */
async function dashboardCost(): Promise<number> {
  const text = await page.getByTestId('kpi-cost').locator('.stat-value').innerText();
  return Number(text.replace(/[^0-9.]/g, '')) || Number.NaN;
}

describe('the panel', () => {
  test('serves one self-contained page with a strict content security policy', async () => {
    const response = await fetch(`${server.url}/management.html`);
    const html = await response.text();
    const built = readFileSync(new URL('../dist/management.html', import.meta.url), 'utf8');
    expect(html, 'the binary embeds the panel just built; rebuild it with cargo build').toBe(built);
    const policy = response.headers.get('content-security-policy') ?? '';
    expect(policy).toContain("script-src 'sha256-");
    expect(policy).not.toContain('unsafe');
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+stylesheet/);
  });

  test('first start shows the setup wizard, which saves the connection and logs in', async () => {
    await go('');
    await expect(page.getByTestId('setup-step-adminKey').isVisible()).resolves.toBe(true);
    await page.screenshot({ path: screenshotPath('setup-light-desktop') });

    // A wrong admin key is named as such before anything is saved.
    allowed = ['/status'];
    await page.getByTestId('setup-admin-key').fill('cmp_admin_wrong');
    await page.getByTestId('setup-next').click();
    await page.getByRole('alert').waitFor();
    allowed = [];

    await page.getByTestId('setup-admin-key').fill(server.adminKey);
    await page.getByTestId('setup-next').click();
    await page.getByTestId('setup-url').fill(cpa.url.replace('http://', ''));
    await expect(page.getByText(`Will be saved as ${cpa.url}`).isVisible()).resolves.toBe(true);
    await page.getByTestId('setup-next').click();
    await page.getByTestId('setup-management-key').fill(cpa.key);
    await page.getByTestId('setup-next').click();
    await expect(page.getByTestId('setup-monitoring').isChecked()).resolves.toBe(true);
    await page.getByTestId('setup-next').click();
    await page.getByTestId('setup-mode').selectOption('http');
    await page.getByTestId('setup-poll').fill('200');
    await page.getByTestId('setup-next').click();
    const review = await page.getByTestId('setup-review').innerText();
    expect(review).not.toContain(cpa.key);
    expect(review).not.toContain(server.adminKey);
    await page.screenshot({ path: screenshotPath('setup-review-light-desktop') });
    await page.getByTestId('setup-next').click();
    await page.getByTestId('page-dashboard').waitFor();
  });

  test('the dashboard shows the emitted events', async () => {
    const batch = await cpa.command('emit 60');
    const secret = await cpa.command('fail-secret');
    emitted = Number(batch.emitted) + 1;
    secrets = secret.secrets as string[];
    secretRequest = secret.request_id as string;
    await refreshUntil(async () => (await page.getByTestId('kpi-calls').locator('.stat-value').innerText()) === String(emitted), `${emitted} calls today`);
    await expect(page.getByTestId('traffic-chart').locator('canvas').count()).resolves.toBeGreaterThan(0);
    await expect(page.getByTestId('health-strip').locator('.tone-bad, .tone-warn').count()).resolves.toBeGreaterThan(0);
    await expect(page.getByTestId('recent-failures').innerText()).resolves.toContain('claude-sonnet-4-6');
  });

  test('a monitoring filter narrows the event table', async () => {
    await go('#/monitoring?tab=realtime');
    const rows = page.getByTestId('event-table').locator('tbody tr');
    await expect.poll(() => rows.count(), { timeout: 20_000 }).toBe(emitted);
    await page.getByTestId('filter-model').selectOption('claude-sonnet-4-6');
    await expect.poll(async () => {
      const count = await rows.count();
      return count > 0 && count < emitted;
    }, { timeout: 20_000 }).toBe(true);
    await settle(page);
    const models = await page.getByTestId('event-table').locator('tbody tr td:nth-child(2)').allInnerTexts();
    expect(new Set(models)).toEqual(new Set(['claude-sonnet-4-6']));
  });

  test("a failed request's detail shows a redacted summary", async () => {
    await page.getByTestId('filter-status').getByRole('radio', { name: 'Failed' }).click();
    await page.getByTestId('filter-search').fill(secretRequest);
    const rows = page.getByTestId('event-table').locator('tbody tr');
    await expect.poll(() => rows.count(), { timeout: 20_000 }).toBe(1);
    // Keyboard: the row opens with Enter and the drawer closes with Escape.
    await rows.first().focus();
    await page.keyboard.press('Enter');
    const summary = await page.getByTestId('fail-summary').innerText();
    expect(summary).toContain('[redacted]');
    for (const secret of secrets) expect(summary).not.toContain(secret.replace('Bearer ', ''));
    await page.screenshot({ path: screenshotPath('request-detail-light-desktop') });
    await page.keyboard.press('Escape');
    await expect(page.getByTestId('event-detail').count()).resolves.toBe(0);
    await page.getByTestId('filter-clear').click();
    await expect(page.getByTestId('filter-model').inputValue()).resolves.toBe('');
    await expect.poll(() => rows.count(), { timeout: 20_000 }).toBe(emitted);
  });

  test('a price added on the price page is saved, pinned and listed', async () => {
    await go('#/model-prices');
    await page.getByTestId('price-add').click();
    await page.getByTestId('price-input-model').fill('e2e-priced-model');
    await page.getByTestId('price-input-prompt').fill('1.5');
    await page.getByTestId('price-input-completion').fill('6');
    await page.getByTestId('price-save').click();
    await page.getByTestId('price-table').getByText('e2e-priced-model').first().waitFor();
    const saved = await fetch(`${server.url}/v0/management/model-prices`, {
      headers: { Authorization: `Bearer ${server.adminKey}` },
    }).then((response) => response.json());
    expect(saved.prices['e2e-priced-model']).toMatchObject({ prompt: 1.5, completion: 6, pinned: true });
  });

  test('a price sync reports what it matched, a price edit changes the shown cost, one request explains its cost', async () => {
    await go('#/');
    await expect(page.getByTestId('kpi-cost').innerText()).resolves.toContain('No price for');
    expect(await dashboardCost()).toBeNaN();

    await go('#/model-prices');
    await page.getByTestId('price-sync').click();
    const report = page.getByTestId('sync-report');
    await report.waitFor();
    expect(prices.requests).toBeGreaterThan(0);
    await expect(report.innerText()).resolves.toContain('litellm');
    await page.keyboard.press('Escape');

    await go('#/');
    await refreshUntil(async () => !Number.isNaN(await dashboardCost()), 'a known cost for today');
    const before = await dashboardCost();
    expect(before).toBeGreaterThan(0);

    await go('#/model-prices');
    await page.getByTestId('price-edit-gpt-5.5').click();
    await page.getByTestId('price-input-prompt').fill('125');
    await page.getByTestId('price-input-completion').fill('1000');
    await page.getByTestId('price-save').click();
    await page.getByTestId('price-editor').waitFor({ state: 'detached' });

    await go('#/');
    await refreshUntil(async () => (await dashboardCost()) > before, 'a higher cost after the price edit');

    // The request detail explains the cost of one gpt-5.5 request with the edited price.
    await go('#/monitoring?tab=realtime');
    await page.getByTestId('filter-model').selectOption('gpt-5.5');
    await page.getByTestId('filter-status').getByRole('radio', { name: 'Success' }).click();
    const row = page.getByTestId('event-table').locator('tbody tr').first();
    await expect.poll(async () => (await row.locator('td:nth-child(2)').innerText()) === 'gpt-5.5', { timeout: 20_000 }).toBe(true);
    await row.click();
    const explanation = page.getByTestId('cost-explanation');
    await explanation.waitFor();
    await expect(explanation.innerText()).resolves.toContain('gpt-5.5');
    await expect(page.getByTestId('explained-cost').innerText()).resolves.toMatch(/\$\d/);
    await page.screenshot({ path: screenshotPath('request-cost-light-desktop') });
    await page.keyboard.press('Escape');
    await page.getByTestId('filter-clear').click();
  });

  test('an alias saved for a client key replaces its hash wherever the key appears', async () => {
    await go('#/model-prices');
    const table = page.getByTestId('alias-table');
    const first = table.locator('tbody tr').first();
    await first.waitFor();
    await first.locator('input').fill('CI bot');
    await first.getByRole('button', { name: 'Save' }).click();
    await expect.poll(() => first.locator('input').inputValue()).toBe('CI bot');
    await go('#/monitoring?tab=keys');
    await expect.poll(() => page.getByTestId('group-table-keys').innerText(), { timeout: 20_000 }).toContain('CI bot');
    await go('#/usage-analytics?tab=apiKeys');
    await expect.poll(() => page.getByTestId('page-analytics').innerText(), { timeout: 20_000 }).toContain('CI bot');
  });

  test('export downloads the stored events as NDJSON', async () => {
    await go('#/transfer');
    const download = page.waitForEvent('download');
    await page.getByTestId('export-run').click();
    const file = await download;
    expect(file.suggestedFilename()).toBe('usage-events.jsonl');
    exported = (await file.path())!;
    const lines = readFileSync(exported, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(emitted);
    for (const line of lines) expect(JSON.parse(line).event_hash).toMatch(/^[0-9a-f]{64}$/);
    // Only redacted summaries leave the server.
    for (const secret of secrets) expect(readFileSync(exported, 'utf8')).not.toContain(secret.replace('Bearer ', ''));
  });

  test('importing the export again through an import session adds nothing', async () => {
    await page.getByTestId('import-file').setInputFiles(exported);
    await page.getByTestId('import-start').click();
    const result = page.getByTestId('import-result');
    await result.waitFor({ timeout: 60_000 });
    const text = await result.innerText();
    expect(text).toMatch(new RegExp(`Added\\s+0`));
    expect(text).toMatch(new RegExp(`Already stored\\s+${emitted}`));
  });

  test('a backup is taken while collecting and listed with its files', async () => {
    await page.getByTestId('backup-create').click();
    const table = page.getByTestId('backup-table');
    await table.locator('tbody tr').first().waitFor({ timeout: 60_000 });
    await expect(table.innerText()).resolves.toContain('usage.sqlite');
    await page.screenshot({ path: screenshotPath('transfer-done-light-desktop'), fullPage: true });
  });

  test('a server error on one card leaves the others working', async () => {
    await page.route('**/v0/management/dashboard/summary**', (route) =>
      route.fulfill({ status: 500, contentType: 'application/json', body: '{"error":"boom","code":"request_failed"}' }),
    );
    allowed = ['/v0/management/dashboard/summary'];
    await go('#/');
    await expect(page.locator('#card-today').getAttribute('data-state')).resolves.toBe('error');
    await expect(page.locator('#card-collector').getAttribute('data-state')).resolves.toBe('ready');
    await expect(page.locator('#card-keys').getAttribute('data-state')).resolves.toBe('ready');
    await page.unroute('**/v0/management/dashboard/summary**');
    allowed = [];
  });

  test('every page in light and dark, at desktop and phone width', async () => {
    const pages: [string, string][] = [
      ['dashboard', '#/'],
      ['monitor', '#/monitoring?tab=realtime'],
      ['monitor-accounts', '#/monitoring?tab=accounts'],
      ['analytics', '#/usage-analytics?tab=overview'],
      ['analytics-trends', '#/usage-analytics?tab=trends'],
      ['analytics-models', '#/usage-analytics?tab=models'],
      ['analytics-heatmap', '#/usage-analytics?tab=heatmap'],
      ['prices', '#/model-prices'],
      ['transfer', '#/transfer'],
      ['system', '#/system'],
    ];
    for (const theme of ['light', 'dark'] as const) {
      await page.setViewportSize(DESKTOP);
      await go('#/');
      await page.getByTestId('theme-select').selectOption(theme);
      for (const [width, viewport] of [['desktop', DESKTOP], ['phone', PHONE]] as const) {
        await page.setViewportSize(viewport);
        for (const [name, hash] of pages) {
          await go(hash);
          await page.screenshot({ path: screenshotPath(`${name}-${theme}-${width}`), fullPage: true });
        }
      }
    }
    await page.setViewportSize(PHONE);
    await go('#/');
    const menu = page.getByRole('button', { name: 'Menu' });
    await menu.click();
    // On a phone the language and theme pickers live in the drawer.
    await expect(page.getByTestId('theme-select-drawer').isVisible()).resolves.toBe(true);
    await page.locator('.sidebar').getByRole('link', { name: 'System' }).click();
    await page.getByTestId('page-system').waitFor();
    // The drawer closes on the render after the route changes.
    await expect.poll(() => menu.getAttribute('aria-expanded')).toBe('false');
    await page.setViewportSize(DESKTOP);
  });

  test('Chinese and the dark theme are applied everywhere and remembered', async () => {
    await go('#/');
    await page.getByTestId('language-select').selectOption('zh');
    await page.getByTestId('theme-select').selectOption('dark');
    await expect(page.locator('.sidebar').innerText()).resolves.toContain('仪表盘');
    await expect(page.locator('html').getAttribute('data-theme')).resolves.toBe('dark');
    await expect(page.locator('html').getAttribute('lang')).resolves.toBe('zh-CN');
    await page.reload();
    await settle(page);
    await expect(page.getByTestId('kpi-calls').innerText()).resolves.toContain('调用次数');
    await expect(page.locator('html').getAttribute('data-theme')).resolves.toBe('dark');
    await page.screenshot({ path: screenshotPath('dashboard-zh-dark-desktop'), fullPage: true });
  });

  test('logout, the wrong-key message, and login again', async () => {
    await page.getByTestId('logout').click();
    await page.getByTestId('login-form').waitFor();
    await page.getByTestId('language-select').selectOption('en');
    await page.getByTestId('theme-select').selectOption('light');
    await page.screenshot({ path: screenshotPath('login-light-desktop') });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: screenshotPath('login-light-phone') });
    await page.setViewportSize(DESKTOP);
    const session = await page.evaluate(() => [sessionStorage.getItem('cpamp.session'), localStorage.getItem('cpamp.session')]);
    expect(session).toEqual([null, null]);

    allowed = ['/status'];
    await page.getByTestId('login-key').fill(cpa.key);
    await page.getByTestId('login-submit').click();
    await expect(page.getByRole('alert').innerText()).resolves.toContain('That is the CPA Management Key');
    allowed = [];

    await page.getByTestId('login-key').fill(server.adminKey);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('page-dashboard').waitFor();
    await page.getByTestId('logout').click();
    await page.getByTestId('login-form').waitFor();
  });

  test('no console error on any page', () => {
    expect(problems).toEqual([]);
  });
});
