import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, test } from 'vitest';

import { en } from '../src/i18n/en';
import { zh } from '../src/i18n/zh';
import { interpolate, t } from '../src/lib/i18n';
import { settings, detectLanguage } from '../src/lib/settings';

const placeholders = (text: string) => [...text.matchAll(/\{(\w+)\}/g)].map((match) => match[1]).sort();

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : /\.tsx?$/.test(name) ? [path] : [];
  });
}

describe('translations', () => {
  test('Chinese has every English key, with the same placeholders, and no blanks', () => {
    expect(Object.keys(zh).sort()).toEqual(Object.keys(en).sort());
    for (const key of Object.keys(en) as (keyof typeof en)[]) {
      expect(zh[key].trim(), key).not.toBe('');
      expect(placeholders(zh[key]), key).toEqual(placeholders(en[key]));
    }
  });

  test('every key the code asks for exists', () => {
    const root = new URL('../src', import.meta.url).pathname;
    const missing: string[] = [];
    for (const file of sourceFiles(root)) {
      const text = readFileSync(file, 'utf8');
      for (const match of text.matchAll(/\bt\('([a-zA-Z0-9_.]+)'/g)) {
        if (!(match[1]! in en)) missing.push(`${file}: ${match[1]}`);
      }
      for (const match of text.matchAll(/label: '([a-z]+\.[a-zA-Z.]+)'/g)) {
        if (!(match[1]! in en)) missing.push(`${file}: ${match[1]}`);
      }
    }
    expect(missing).toEqual([]);
  });

  test('the chosen language is used and placeholders are filled', () => {
    settings.set({ ...settings.get(), language: 'zh' });
    expect(t('nav.dashboard')).toBe('仪表盘');
    expect(t('common.pageOf', { page: 2, pages: 5 })).toBe('第 2 / 5 页');
    settings.set({ ...settings.get(), language: 'en' });
    expect(t('common.pageOf', { page: 2, pages: 5 })).toBe('Page 2 of 5');
    expect(interpolate('{a} and {b}', { a: 1 })).toBe('1 and {b}');
  });

  test('the first visit follows the browser language', () => {
    expect(detectLanguage(['zh-TW', 'en'])).toBe('zh');
    expect(detectLanguage(['fr-FR', 'en-GB'])).toBe('en');
    expect(detectLanguage([])).toBe('en');
  });
});
