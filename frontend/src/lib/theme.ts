// Applies the chosen theme to the page and tells charts to redraw with its colours.
import { effectiveTheme, settings } from './settings';
import { Store } from './store';

/** Bumped whenever the shown theme changes; charts re-read their colours. */
export const themeVersion = new Store(0);

let applied: 'light' | 'dark' | null = null;

export function applyTheme(): void {
  const theme = effectiveTheme(settings.get().theme);
  document.documentElement.dataset.theme = theme;
  document.documentElement.style.colorScheme = theme;
  if (theme !== applied) {
    applied = theme;
    themeVersion.set((version) => version + 1);
  }
}

/** Follows the settings and, for `auto`, the operating system. */
export function watchTheme(): void {
  applyTheme();
  settings.subscribe(applyTheme);
  globalThis.matchMedia?.('(prefers-color-scheme: dark)').addEventListener('change', applyTheme);
}
