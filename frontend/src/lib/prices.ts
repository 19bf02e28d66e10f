// Price table rows and edits. Saving always sends the whole price book (the API replaces it).
import type { ModelPrice, PriceBook, SyncResult } from './types';

export interface PriceRow {
  model: string;
  calls: number;
  price?: ModelPrice;
  status: 'saved' | 'missing' | 'pending';
}

/**
 * One row per model that has a price or was seen in usage. A model without a price is
 * `pending` when the last sync offered candidates for it, else `missing`.
 */
export function priceRows(
  book: PriceBook,
  seen: readonly { model: string; calls: number }[],
  report: SyncResult | null,
): PriceRow[] {
  const calls = new Map(seen.map((entry) => [entry.model, entry.calls]));
  const pending = new Set((report?.candidates ?? []).map((entry) => entry.model));
  const models = new Set([...Object.keys(book), ...calls.keys()]);
  return [...models]
    .filter((model) => model && model !== '-')
    .map((model): PriceRow => {
      const price = book[model];
      return {
        model,
        calls: calls.get(model) ?? 0,
        price,
        status: price ? 'saved' : pending.has(model) ? 'pending' : 'missing',
      };
    })
    .sort((left, right) => right.calls - left.calls || left.model.localeCompare(right.model));
}

export interface RateInput {
  prompt: string;
  completion: string;
  cache: string;
  cacheRead: string;
  cacheCreation: string;
}

/**
 * The book with `model` set to the typed base rates. A manual edit replaces synced tier
 * rules (the form edits base rates only) and keeps the price pinned against later syncs.
 * An empty field is "not configured"; `0` is an explicit zero.
 */
export function editPrice(book: PriceBook, model: string, input: RateInput): PriceBook {
  const value = (text: string) => (text.trim() === '' ? undefined : Number(text));
  const prompt = value(input.prompt);
  const completion = value(input.completion);
  const cache = value(input.cache);
  const cacheRead = value(input.cacheRead);
  const cacheCreation = value(input.cacheCreation);
  const price: ModelPrice = {
    prompt: prompt ?? 0,
    completion: completion ?? 0,
    cache: cache ?? 0,
    promptConfigured: prompt !== undefined,
    completionConfigured: completion !== undefined,
    pinned: true,
  };
  if (cacheRead !== undefined) {
    price.cacheRead = cacheRead;
    price.cacheReadConfigured = true;
  }
  if (cacheCreation !== undefined) {
    price.cacheCreation = cacheCreation;
    price.cacheCreationConfigured = true;
  }
  return { ...book, [model]: price };
}
