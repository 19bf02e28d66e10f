import { expect, test } from 'vitest';

import { activeFilterCount, analyticsBody, EMPTY_FILTERS, toFilters } from '../src/lib/query';
import { editPrice, priceRows } from '../src/lib/prices';
import { exportQuery, filenameOf } from '../src/lib/transfer';
import type { PriceBook } from '../src/lib/types';

test('the filter bar maps onto the API filters', () => {
  expect(toFilters(EMPTY_FILTERS)).toEqual({});
  expect(
    toFilters({ ...EMPTY_FILTERS, model: 'gpt-5', apiKey: 'ABC', provider: 'Codex', status: 'failure', minLatencyMs: 3000, cache: 'hit', channel: 'a1' }),
  ).toEqual({
    models: ['gpt-5'],
    api_key_hashes: ['abc'],
    providers: ['codex'],
    failed_only: true,
    min_latency_ms: 3000,
    cache_status: 'hit',
    auth_indices: ['a1'],
  });
  expect(toFilters({ ...EMPTY_FILTERS, status: 'success' })).toEqual({ include_failed: false });
  expect(activeFilterCount({ ...EMPTY_FILTERS, model: 'x', search: 'y' })).toBe(2);
});

test('a request body carries the zone, the range and the trimmed search', () => {
  const body = analyticsBody({ fromMs: 10, toMs: 20 }, 15, 'Asia/Shanghai', { ...EMPTY_FILTERS, search: '  req-1 ' }, { summary: true });
  expect(body).toEqual({ from_ms: 10, to_ms: 20, now_ms: 15, time_zone: 'Asia/Shanghai', filters: {}, include: { summary: true }, search_query: 'req-1' });
});

test('price rows: saved, missing, and candidates from the last sync', () => {
  const book: PriceBook = { 'gpt-5': { prompt: 1.25, completion: 10, cache: 0.125 } };
  const rows = priceRows(book, [{ model: 'gpt-5', calls: 3 }, { model: 'grok-4', calls: 9 }, { model: 'x', calls: 1 }, { model: '-', calls: 5 }], {
    source: '',
    sources: [],
    imported: 0,
    skipped: 0,
    prices: book,
    candidates: [{ model: 'x', candidates: [] }],
  });
  expect(rows.map((row) => [row.model, row.status, row.calls])).toEqual([
    ['grok-4', 'missing', 9],
    ['gpt-5', 'saved', 3],
    ['x', 'pending', 1],
  ]);
});

test('a manual price keeps explicit zeros, drops tier rules and is pinned', () => {
  const book: PriceBook = {
    'gpt-5': { prompt: 1, completion: 2, cache: 0, contextTiers: [{ thresholdTokens: 272000, prompt: 2, completion: 4, cache: 0 }] },
    other: { prompt: 3, completion: 4, cache: 0 },
  };
  const next = editPrice(book, 'gpt-5', { prompt: '1.5', completion: '0', cache: '', cacheRead: '0.15', cacheCreation: '' });
  expect(next.other).toBe(book.other);
  expect(next['gpt-5']).toEqual({
    prompt: 1.5,
    completion: 0,
    cache: 0,
    promptConfigured: true,
    completionConfigured: true,
    cacheRead: 0.15,
    cacheReadConfigured: true,
    pinned: true,
  });
});

test('export parameters and the saved file name', () => {
  expect(exportQuery({ range: 'all', model: '', apiKey: '', format: 'jsonl' }, 1000)).toEqual({
    from_ms: undefined,
    to_ms: undefined,
    model: undefined,
    api_key_hash: undefined,
    format: undefined,
  });
  expect(exportQuery({ range: '7d', model: 'gpt-5', apiKey: 'ab', format: 'csv' }, 7 * 86_400_000 + 5)).toEqual({
    from_ms: 5,
    to_ms: 7 * 86_400_000 + 6,
    model: 'gpt-5',
    api_key_hash: 'ab',
    format: 'csv',
  });
  expect(filenameOf('attachment; filename="usage-events.jsonl"', 'x')).toBe('usage-events.jsonl');
  expect(filenameOf("attachment; filename*=UTF-8''a%2Fb.csv", 'x')).toBe('a_b.csv');
  expect(filenameOf(null, 'fallback.jsonl')).toBe('fallback.jsonl');
});
