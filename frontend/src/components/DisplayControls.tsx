// Language and theme pickers, shown in the header and on the login page.
import { t } from '../lib/i18n';
import { settings, updateSettings, type Language, type ThemeChoice } from '../lib/settings';
import { useStore } from '../lib/store';

/** `place` tells the two copies in the shell apart (header on wide screens, drawer on phones). */
export function DisplayControls({ place = '' }: { place?: string }) {
  const prefs = useStore(settings);
  return (
    <>
      <label class="compact-field">
        <span class="visually-hidden">{t('shell.language')}</span>
        <select
          value={prefs.language}
          onChange={(event) => updateSettings({ language: event.currentTarget.value as Language })}
          data-testid={`language-select${place}`}
        >
          <option value="en">English</option>
          <option value="zh">简体中文</option>
        </select>
      </label>
      <label class="compact-field">
        <span class="visually-hidden">{t('shell.theme')}</span>
        <select
          value={prefs.theme}
          onChange={(event) => updateSettings({ theme: event.currentTarget.value as ThemeChoice })}
          data-testid={`theme-select${place}`}
        >
          <option value="auto">{t('shell.themeAuto')}</option>
          <option value="light">{t('shell.themeLight')}</option>
          <option value="dark">{t('shell.themeDark')}</option>
        </select>
      </label>
    </>
  );
}
