// Translations: English and Simplified Chinese. Every key exists in both languages (the
// Chinese table is typed against the English one, and a unit test checks placeholders).
import { en } from '../i18n/en';
import { zh } from '../i18n/zh';
import { settings, type Language } from './settings';

export type MessageKey = keyof typeof en;
export type Messages = Record<MessageKey, string>;

export const messages: Record<Language, Messages> = { en, zh };

/** `{name}` placeholders replaced by `params`. */
export function interpolate(template: string, params?: Record<string, string | number>): string {
  if (!params) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in params ? String(params[name]) : whole,
  );
}

export function t(key: MessageKey, params?: Record<string, string | number>): string {
  const table = messages[settings.get().language] ?? en;
  return interpolate(table[key] ?? en[key] ?? key, params);
}

/** A key built at run time (for example from a server code); undefined when unknown. */
export function tMaybe(key: string, params?: Record<string, string | number>): string | undefined {
  const table = messages[settings.get().language] ?? en;
  const template = (table as Record<string, string>)[key];
  return template === undefined ? undefined : interpolate(template, params);
}
