// Display preferences (language, theme, time zone), remembered in localStorage.
import { Store, storage } from './store';

export type Language = 'en' | 'zh';
export type ThemeChoice = 'auto' | 'light' | 'dark';

export interface Settings {
  language: Language;
  theme: ThemeChoice;
  /** An IANA zone; empty means the browser's zone. */
  timeZone: string;
}

const KEYS = { language: 'cpamp.language', theme: 'cpamp.theme', timeZone: 'cpamp.timeZone' };

export function detectLanguage(languages: readonly string[]): Language {
  for (const language of languages) {
    const lower = language.toLowerCase();
    if (lower.startsWith('zh')) return 'zh';
    if (lower.startsWith('en')) return 'en';
  }
  return 'en';
}

function initial(): Settings {
  const language = storage.get(KEYS.language);
  const theme = storage.get(KEYS.theme);
  return {
    language:
      language === 'en' || language === 'zh'
        ? language
        : detectLanguage(globalThis.navigator?.languages ?? []),
    theme: theme === 'light' || theme === 'dark' || theme === 'auto' ? theme : 'auto',
    timeZone: storage.get(KEYS.timeZone) ?? '',
  };
}

export const settings = new Store<Settings>(initial());

export function updateSettings(change: Partial<Settings>): void {
  settings.set((current) => ({ ...current, ...change }));
  const next = settings.get();
  storage.set(KEYS.language, next.language);
  storage.set(KEYS.theme, next.theme);
  storage.set(KEYS.timeZone, next.timeZone || null);
}

export function browserTimeZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** The zone every date is shown and bucketed in. */
export function activeTimeZone(): string {
  return settings.get().timeZone || browserTimeZone();
}

export function locale(): string {
  return settings.get().language === 'zh' ? 'zh-CN' : 'en-US';
}

/** The theme actually shown: `auto` follows the operating system. */
export function effectiveTheme(choice: ThemeChoice): 'light' | 'dark' {
  if (choice !== 'auto') return choice;
  return globalThis.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}
