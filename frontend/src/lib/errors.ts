// Server errors as sentences that name the fix, in the chosen language.
import { ApiError } from './api';
import { t, tMaybe } from './i18n';

/** A mistake in what was typed, caught before anything was sent; the message is final. */
export class InputError extends Error {
  override name = 'InputError';
}

/** Codes that only say "this route does not exist here". */
const UNAVAILABLE_CODES = new Set(['', 'method_not_allowed', 'not_implemented']);

export interface Described {
  title: string;
  /** The server's own words, when they add something. */
  detail?: string;
}

/**
 * `context` picks a more specific sentence where one code means different things, such as
 * `request_failed` during setup (CPA could not be reached).
 */
export function describeError(error: unknown, context?: 'setup' | 'login'): Described {
  if (error instanceof InputError) return { title: error.message };
  if (error instanceof ApiError) {
    if (error.unavailable && UNAVAILABLE_CODES.has(error.code)) {
      return { title: t('error.unavailable'), detail: `HTTP ${error.status}` };
    }
    if (error.status === 429) {
      return { title: t('error.too_many_attempts', { seconds: error.retryAfterSecs ?? 60 }), detail: error.message };
    }
    if (error.code === 'invalid_admin_key' && context === 'login') {
      return { title: loginMessage(error.message), detail: error.message };
    }
    const specific = error.code && context ? tMaybe(`error.${context}.${error.code}`) : undefined;
    const known = specific ?? (error.code ? tMaybe(`error.${error.code}`) : undefined);
    if (known) return { title: known, detail: error.message };
    if (error.status >= 500) return { title: t('error.server', { status: error.status }), detail: error.message };
    return { title: t('error.http', { status: error.status }), detail: error.message };
  }
  if (error instanceof TypeError) return { title: t('error.network'), detail: error.message };
  return { title: t('error.unexpected'), detail: error instanceof Error ? error.message : String(error) };
}

/** The login form's 401: the server says which key was typed when it recognises it. */
function loginMessage(serverMessage: string): string {
  if (serverMessage.includes('this is the CPA Management Key')) return t('login.wrongKeyManagement');
  if (serverMessage.includes('this is a CPA API Key')) return t('login.wrongKeyApi');
  return t('login.wrongKey');
}
