import { expect, test } from 'vitest';

import { normalizeBaseUrl } from '../src/lib/url';

test('the CPA URL is normalised as the server stores it', () => {
  expect(normalizeBaseUrl('  cpa:8317/v0/management/ ')).toBe('http://cpa:8317');
  expect(normalizeBaseUrl('https://h/cpa/v0/')).toBe('https://h/cpa');
  expect(normalizeBaseUrl('http://h/cpa')).toBe('http://h/cpa');
  expect(normalizeBaseUrl('127.0.0.1:8317///')).toBe('http://127.0.0.1:8317');
  expect(normalizeBaseUrl('   ')).toBe('');
});
