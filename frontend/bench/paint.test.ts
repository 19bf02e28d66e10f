// First meaningful paint of the dashboard: the time from navigation start until the
// first frame that shows the day's numbers (the `cpamp:dashboard-painted` mark), in
// Chromium against the release server on a large database, beside the same paint on an
// empty database and the server's own time for the dashboard request (baselines from
// the same run). Prints a table; it asserts nothing, a benchmark is not a test.
// `cargo xtask bench panel` fills the database and runs this.
import { execSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, test } from 'vitest';

import { launchChromium, startFakeCpa, startServer, type Browser, type FakeCpa } from '../e2e/harness';

const ADMIN_KEY = process.env.CPAMP_BENCH_ADMIN_KEY ?? 'cmp_admin_panelBenchKey000000000000000000';
const DATA_DIR = process.env.CPAMP_BENCH_DATA_DIR;
const RUNS = Number(process.env.CPAMP_BENCH_RUNS ?? 7);

let cpa: FakeCpa;
let browser: Browser;

beforeAll(async () => {
  if (!DATA_DIR) throw new Error('CPAMP_BENCH_DATA_DIR must name a data directory holding the large database');
  cpa = await startFakeCpa();
  browser = await launchChromium();
  // Chromium's own start-up (first renderer, fonts) is not the panel's: pay it once here.
  const warmup = await browser.context.newPage();
  await warmup.setContent('<p>warm-up</p>');
  await warmup.close();
});

afterAll(async () => {
  await browser?.close();
  await cpa?.stop();
});

interface Sample {
  paint: number;
  contentful: number;
  summary: number;
}

async function measure(dataDir: string): Promise<{ cold: Sample; warm: Sample[]; events: number }> {
  const server = await startServer(
    { CPA_MANAGER_ADMIN_KEY: ADMIN_KEY, CPA_UPSTREAM_URL: cpa.url, CPA_MANAGEMENT_KEY: cpa.key },
    dataDir,
  );
  try {
    const samples: Sample[] = [];
    for (let run = 0; run <= RUNS; run += 1) {
      const page = await browser.context.newPage();
      await page.addInitScript((key) => sessionStorage.setItem('cpamp.session', key), ADMIN_KEY);
      await page.goto(`${server.url}/management.html#/`);
      await page.waitForFunction(() => performance.getEntriesByName('cpamp:dashboard-painted').length > 0, undefined, { timeout: 120_000 });
      const timing = await page.evaluate(() => {
        const paint = performance.getEntriesByName('cpamp:dashboard-painted')[0]!.startTime;
        const contentful = performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? Number.NaN;
        const summary = performance
          .getEntriesByType('resource')
          .filter((entry) => entry.name.includes('/dashboard/summary'))
          .map((entry) => (entry as PerformanceResourceTiming).responseEnd - (entry as PerformanceResourceTiming).requestStart)[0] ?? Number.NaN;
        return { paint, contentful, summary };
      });
      samples.push(timing);
      await page.close();
    }
    const status = (await (await fetch(`${server.url}/status`, { headers: { Authorization: `Bearer ${ADMIN_KEY}` } })).json()) as { events: number };
    return { cold: samples[0]!, warm: samples.slice(1), events: status.events };
  } finally {
    await server.stop();
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const max = (values: number[]) => Math.max(...values);
const ms = (value: number) => `${value.toFixed(0)} ms`.padStart(9);

test('first meaningful paint of the dashboard', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'cpamp-paint-empty-'));
  try {
    const baseline = await measure(empty);
    const large = await measure(DATA_DIR!);
    const load = execSync('uptime').toString().trim();
    const rows: [string, number[], number][] = [
      [`dashboard painted, ${large.events} events`, large.warm.map((sample) => sample.paint), large.cold.paint],
      [`  summary request (server), ${large.events} events`, large.warm.map((sample) => sample.summary), large.cold.summary],
      [`  first contentful paint, ${large.events} events`, large.warm.map((sample) => sample.contentful), large.cold.contentful],
      ['dashboard painted, empty database (baseline)', baseline.warm.map((sample) => sample.paint), baseline.cold.paint],
      ['  summary request (server), empty database', baseline.warm.map((sample) => sample.summary), baseline.cold.summary],
    ];
    console.log(`\npanel first-paint benchmark: Chromium, release server, ${RUNS} warm runs after one cold run (target: painted < 1000 ms)`);
    console.log(`load: ${load}`);
    console.log(`${'measure'.padEnd(52)} ${'cold'.padStart(9)} ${'median'.padStart(9)} ${'max'.padStart(9)}`);
    for (const [name, values, cold] of rows) console.log(`${name.padEnd(52)} ${ms(cold)} ${ms(median(values))} ${ms(max(values))}`);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});
