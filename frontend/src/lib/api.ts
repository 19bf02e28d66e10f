// The HTTP client: the admin key on every request, the `{error, code}` envelope turned
// into an ApiError, aborts passed through, and the session that holds the key.
import { Store } from './store';

/** Where the admin key lives while logged in. */
export interface Session {
  key: string;
  /** True when the key is kept in localStorage (opt-in), false for sessionStorage. */
  remembered: boolean;
}

const SESSION_KEY = 'cpamp.session';

function readSession(): Session | null {
  for (const [store, remembered] of [
    [globalThis.sessionStorage, false],
    [globalThis.localStorage, true],
  ] as const) {
    try {
      const key = store?.getItem(SESSION_KEY);
      if (key) return { key, remembered };
    } catch {
      // Storage disabled: log in again.
    }
  }
  return null;
}

export const session = new Store<Session | null>(readSession());

/** Why the last session ended, shown on the login page. */
export const sessionEndReason = new Store<string | null>(null);

export function logIn(key: string, remember: boolean): void {
  try {
    globalThis.sessionStorage?.removeItem(SESSION_KEY);
    globalThis.localStorage?.removeItem(SESSION_KEY);
    (remember ? globalThis.localStorage : globalThis.sessionStorage)?.setItem(SESSION_KEY, key);
  } catch {
    // Kept in memory only.
  }
  sessionEndReason.set(null);
  session.set({ key, remembered: remember });
}

export function logOut(reason: string | null = null): void {
  try {
    globalThis.sessionStorage?.removeItem(SESSION_KEY);
    globalThis.localStorage?.removeItem(SESSION_KEY);
  } catch {
    // Nothing stored.
  }
  sessionEndReason.set(reason);
  session.set(null);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterSecs?: number,
    readonly body?: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /**
   * The route does not exist on this server (yet): 404, 405 or 501. A 404 with the code
   * `not_found` is a missing record on a route that exists, not a missing route.
   */
  get unavailable(): boolean {
    return (this.status === 404 && this.code !== 'not_found') || this.status === 405 || this.status === 501;
  }
}

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError';
}

export interface RequestOptions {
  method?: string;
  query?: Record<string, string | number | boolean | null | undefined>;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Send this key instead of the session's (login and setup). */
  key?: string;
  /** Skip the JSON parse and return the Response. */
  raw?: boolean;
  /** A 401 here does not end the session (the login form checks a typed key). */
  keepSessionOn401?: boolean;
}

/** The session key was rejected: the admin key changed or was reset. */
export const SESSION_REJECTED = 'session_rejected';

export function buildUrl(path: string, query?: RequestOptions['query']): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined && value !== '') params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export async function request<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await send(path, options);
  if (options.raw) return response as unknown as T;
  const text = await response.text();
  if (!text) return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(response.status, 'invalid_response', `the server sent something that is not JSON (${response.status})`);
  }
}

export async function send(path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json', ...options.headers };
  const key = options.key ?? session.get()?.key;
  if (key) headers.Authorization = `Bearer ${key}`;
  let body = options.body;
  if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.json);
  }
  const response = await fetch(buildUrl(path, options.query), {
    method: options.method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body,
    signal: options.signal,
    cache: 'no-store',
  });
  if (response.ok) return response;
  const error = await errorOf(response);
  if (error.status === 401 && !options.keepSessionOn401 && !options.key && session.get()) {
    logOut(SESSION_REJECTED);
  }
  throw error;
}

async function errorOf(response: Response): Promise<ApiError> {
  const retryAfter = Number(response.headers.get('Retry-After'));
  let code = '';
  let message = `HTTP ${response.status}`;
  let body: unknown;
  try {
    const text = await response.text();
    try {
      body = JSON.parse(text);
      if (body && typeof body === 'object') {
        const envelope = body as { error?: unknown; code?: unknown };
        if (typeof envelope.error === 'string') message = envelope.error;
        if (typeof envelope.code === 'string') code = envelope.code;
      }
    } catch {
      if (text.trim()) message = text.trim().slice(0, 300);
    }
  } catch {
    // Body unreadable: keep the status line.
  }
  return new ApiError(response.status, code, message, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined, body);
}
