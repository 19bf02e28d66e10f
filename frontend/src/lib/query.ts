// Builds `monitoring/analytics` request bodies from what the filter bars show.
import type { AnalyticsRequest, Filters, Include } from './types';
import type { TimeRange } from './time';

export type StatusFilter = 'all' | 'success' | 'failure';

export interface FilterState {
  model: string;
  apiKey: string;
  provider: string;
  account: string;
  channel: string;
  authFile: string;
  status: StatusFilter;
  minLatencyMs: number;
  cache: string;
  search: string;
}

export const EMPTY_FILTERS: FilterState = {
  model: '',
  apiKey: '',
  provider: '',
  account: '',
  channel: '',
  authFile: '',
  status: 'all',
  minLatencyMs: 0,
  cache: '',
  search: '',
};

/** The API's `filters` object; empty choices are left out. */
export function toFilters(state: FilterState): Filters {
  const filters: Filters = {};
  if (state.model) filters.models = [state.model];
  if (state.apiKey) filters.api_key_hashes = [state.apiKey.toLowerCase()];
  if (state.provider) filters.providers = [state.provider.toLowerCase()];
  if (state.account) filters.accounts = [state.account];
  if (state.channel) filters.auth_indices = [state.channel];
  if (state.authFile) filters.auth_files = [state.authFile];
  if (state.status === 'success') filters.include_failed = false;
  if (state.status === 'failure') filters.failed_only = true;
  if (state.minLatencyMs > 0) filters.min_latency_ms = state.minLatencyMs;
  if (state.cache) filters.cache_status = state.cache;
  return filters;
}

export function activeFilterCount(state: FilterState): number {
  return (Object.keys(EMPTY_FILTERS) as (keyof FilterState)[]).filter(
    (name) => state[name] !== EMPTY_FILTERS[name],
  ).length;
}

export function analyticsBody(
  range: TimeRange,
  nowMs: number,
  timeZone: string,
  state: FilterState,
  include: Include,
): AnalyticsRequest {
  const body: AnalyticsRequest = {
    from_ms: range.fromMs,
    to_ms: range.toMs,
    now_ms: nowMs,
    time_zone: timeZone,
    filters: toFilters(state),
    include,
  };
  const search = state.search.trim();
  if (search) body.search_query = search;
  return body;
}
