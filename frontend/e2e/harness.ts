// Starts the real cpamp binary, the fake CPA and Debian's Chromium for end-to-end tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium, type BrowserContext, type ConsoleMessage, type Page } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : resolve(here, '../../target');

export const SERVER_BIN = process.env.CPAMP_SERVER_BIN ?? join(targetDir, 'debug/cpamp-server');
export const FAKE_CPA_BIN = process.env.CPAMP_FAKE_CPA_BIN ?? join(targetDir, 'debug/examples/fake_cpa');
export const CHROMIUM = process.env.CPAMP_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = resolve(here, '../test-results');
export const SCREENSHOTS = join(ARTIFACTS, 'screenshots');

/** Reads lines from a child's stream and hands them to whoever waits for a match. */
class LineWatcher {
  private readonly lines: string[] = [];
  private readonly waiters: { test: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  readonly reader: Interface;

  constructor(stream: NodeJS.ReadableStream) {
    this.reader = createInterface({ input: stream });
    this.reader.on('line', (line) => {
      this.lines.push(line);
      if (this.lines.length > 2000) this.lines.shift();
      for (const waiter of [...this.waiters]) {
        if (waiter.test(line)) {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    });
  }

  /** The first line (already seen or still to come) that passes `test`. */
  wait(test: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const seen = this.lines.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n${this.lines.slice(-20).join('\n')}`)), timeoutMs);
      this.waiters.push({
        test,
        resolve: (line) => {
          clearTimeout(timer);
          resolvePromise(line);
        },
      });
    });
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolvePromise) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolvePromise();
    });
    child.kill('SIGTERM');
  });
}

export interface FakeCpa {
  url: string;
  key: string;
  command(line: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** The fake CPA example: one JSON line per command, answered in order. */
export async function startFakeCpa(): Promise<FakeCpa> {
  const child = spawn(FAKE_CPA_BIN, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const pending: ((line: string) => void)[] = [];
  let first: ((line: string) => void) | null = null;
  const address = new Promise<string>((resolvePromise) => (first = resolvePromise));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (first) {
      first(line);
      first = null;
    } else {
      pending.shift()?.(line);
    }
  });
  const timeout = <T,>(promise: Promise<T>, what: string) =>
    Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 30_000))]);
  const { url, key } = JSON.parse(await timeout(address, 'the fake CPA address')) as { url: string; key: string };
  return {
    url,
    key,
    async command(line: string) {
      const reply = new Promise<string>((resolvePromise) => pending.push(resolvePromise));
      child.stdin!.write(`${line}\n`);
      return JSON.parse(await timeout(reply, `a reply to ${line}`)) as Record<string, unknown>;
    },
    async stop() {
      child.stdin!.end('quit\n');
      await stopChild(child);
    },
  };
}

export interface Server {
  url: string;
  adminKey: string;
  dataDir: string;
  stop(): Promise<void>;
}

/** The real server on a free port with a fresh data directory; the admin key comes from its log. */
export async function startServer(env: Record<string, string> = {}, dataDir?: string): Promise<Server> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'cpamp-e2e-'));
  const child = spawn(SERVER_BIN, [], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? dir,
      HTTP_ADDR: '127.0.0.1:0',
      USAGE_DATA_DIR: dir,
      RUST_LOG: 'info',
      ...env,
    },
  });
  const lines = new LineWatcher(child.stderr!);
  const listening = await lines.wait((line) => line.includes('listening on '), 60_000, 'the server to listen');
  const addr = /listening on (\S+)/.exec(listening)![1]!;
  let adminKey = env.CPA_MANAGER_ADMIN_KEY ?? '';
  if (!adminKey) {
    const line = await lines.wait((text) => text.includes('admin key generated: '), 5_000, 'the generated admin key');
    adminKey = /admin key generated: (\S+)/.exec(line)![1]!;
  }
  return {
    url: `http://${addr}`,
    adminKey,
    dataDir: dir,
    async stop() {
      await stopChild(child);
      if (!dataDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Chromium flags for a machine without internet: nothing phones home. */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'cpamp-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 860 },
    acceptDownloads: true,
    timezoneId: 'UTC',
    locale: 'en-US',
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export interface ConsoleProblem {
  page: string;
  text: string;
  url?: string;
}

/**
 * Records console errors and warnings, uncaught exceptions and failed requests of a page.
 * A failed network request shows up in Chromium's console too; those are matched against
 * `allowedFailures` (URL substrings the test expects to fail, such as a deliberately
 * broken card), everything else is a problem.
 */
export function watchConsole(page: Page, problems: ConsoleProblem[], allowedFailures: () => string[]): void {
  const where = () => page.url().replace(/^https?:\/\/[^/]+/, '');
  page.on('console', (message: ConsoleMessage) => {
    if (message.type() !== 'error' && message.type() !== 'warning') return;
    const url = message.location().url;
    if (message.text().startsWith('Failed to load resource') && allowedFailures().some((part) => url.includes(part))) return;
    problems.push({ page: where(), text: `${message.type()}: ${message.text()}`, url });
  });
  page.on('pageerror', (error) => problems.push({ page: where(), text: `uncaught: ${error.message}` }));
}

export function screenshotPath(name: string): string {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return join(SCREENSHOTS, `${name}.png`);
}

/** Waits until no card or panel is loading. */
export async function settle(page: Page): Promise<void> {
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"], .card-loading, .splash'), undefined, { timeout: 30_000 });
  await page.waitForTimeout(150);
}

export interface PriceSource {
  url: string;
  requests: number;
  stop(): Promise<void>;
}

/**
 * A local price list in LiteLLM's format (USD per token) on a free port, so a price sync
 * needs no internet: `models` maps a model id to its input and output price per 1M tokens.
 */
export async function startPriceSource(models: Record<string, [number, number]>): Promise<PriceSource> {
  const body = JSON.stringify(
    Object.fromEntries(
      Object.entries(models).map(([id, [input, output]]) => [id, { input_cost_per_token: input / 1e6, output_cost_per_token: output / 1e6 }]),
    ),
  );
  const source: PriceSource = { url: '', requests: 0, stop: async () => undefined };
  const server = createServer((_request, response) => {
    source.requests += 1;
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end(body);
  });
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  const address = server.address() as { port: number };
  source.url = `http://127.0.0.1:${address.port}/model_prices.json`;
  source.stop = () => new Promise<void>((resolvePromise) => server.close(() => resolvePromise()));
  return source;
}
