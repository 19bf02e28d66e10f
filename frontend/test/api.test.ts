import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';

import { ApiError, logIn, request, session, sessionEndReason, SESSION_REJECTED } from '../src/lib/api';
import { describeError, InputError } from '../src/lib/errors';
import { settings } from '../src/lib/settings';
import { MemoryStorage } from './support';


function respond(status: number, body: unknown, headers: Record<string, string> = {}) {
  return vi.fn(async () => new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers }));
}

beforeEach(() => {
  vi.stubGlobal('localStorage', new MemoryStorage());
  vi.stubGlobal('sessionStorage', new MemoryStorage());
  settings.set({ ...settings.get(), language: 'en' });
});

afterEach(() => {
  vi.unstubAllGlobals();
  session.set(null);
});

describe('requests', () => {
  test('send the session key and parse JSON', async () => {
    logIn('cmp_admin_x', false);
    const fetch = respond(200, { ok: true });
    vi.stubGlobal('fetch', fetch);
    await expect(request('/status', { query: { scope: 'database-maintenance', empty: '' } })).resolves.toEqual({ ok: true });
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('/status?scope=database-maintenance');
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer cmp_admin_x');
  });

  test('the key is kept in session storage unless remembering was chosen', () => {
    logIn('k1', false);
    expect(sessionStorage.getItem('cpamp.session')).toBe('k1');
    expect(localStorage.getItem('cpamp.session')).toBeNull();
    logIn('k2', true);
    expect(localStorage.getItem('cpamp.session')).toBe('k2');
    expect(sessionStorage.getItem('cpamp.session')).toBeNull();
  });

  test('the error envelope becomes an ApiError with its code', async () => {
    vi.stubGlobal('fetch', respond(409, { error: 'setup is managed by environment variables', code: 'setup_env_managed' }));
    const error = await request('/setup', { method: 'POST', json: {} }).catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).code).toBe('setup_env_managed');
    expect(describeError(error).title).toContain('environment variables');
  });

  test('a rejected session key logs out; a key typed at login does not', async () => {
    logIn('old', false);
    vi.stubGlobal('fetch', respond(401, { error: 'invalid admin key', code: 'invalid_admin_key' }));
    await request('/status', { key: 'typed' }).catch(() => undefined);
    expect(session.get()?.key).toBe('old');
    await request('/status').catch(() => undefined);
    expect(session.get()).toBeNull();
    expect(sessionEndReason.get()).toBe(SESSION_REJECTED);
  });

  test('404, 405 and 501 mean the route is missing on this server', async () => {
    for (const status of [404, 405, 501]) {
      vi.stubGlobal('fetch', respond(status, '404 page not found'));
      const error = (await request('/v0/management/model-prices').catch((failure: unknown) => failure)) as ApiError;
      expect(error.unavailable).toBe(true);
      expect(describeError(error).title).toBe('This server does not offer this feature yet.');
    }
  });
});

describe('error sentences', () => {
  test('the login form names the key that was typed by mistake', () => {
    const management = new ApiError(401, 'invalid_admin_key', 'invalid admin key: this is the CPA Management Key. Manager Server APIs …');
    expect(describeError(management, 'login').title).toContain('That is the CPA Management Key');
    const api = new ApiError(401, 'invalid_admin_key', 'invalid admin key: this is a CPA API Key, used for model calls …');
    expect(describeError(api, 'login').title).toContain('CPA API Key');
    expect(describeError(new ApiError(401, 'invalid_admin_key', 'invalid admin key'), 'login').title).toContain('not the admin key');
  });

  test('setup errors name the fix, and a refused connection points at the URL', () => {
    const refused = new ApiError(502, 'request_failed', 'Get "http://127.0.0.1:1/v0/management/config": connection refused');
    expect(describeError(refused, 'setup').title).toContain('could not reach CPA');
    expect(describeError(refused, 'setup').detail).toContain('connection refused');
    expect(describeError(new ApiError(400, 'poll_interval_exceeds_retention', 'x'), 'setup').title).toContain('Lower the poll interval');
    expect(describeError(new ApiError(502, 'management_api_validation_failed', 'x')).title).toContain('rejected the Management Key');
  });

  test('too many attempts says how long to wait; Chinese is used when chosen', () => {
    const limited = new ApiError(429, 'too_many_attempts', 'retry in 42 seconds', 42);
    expect(describeError(limited).title).toContain('42 seconds');
    settings.set({ ...settings.get(), language: 'zh' });
    expect(describeError(limited).title).toContain('42 秒');
  });

  test('network failures and typing mistakes', () => {
    expect(describeError(new TypeError('Failed to fetch')).title).toContain('cannot be reached');
    expect(describeError(new InputError('Enter the admin key.')).title).toBe('Enter the admin key.');
  });
});
