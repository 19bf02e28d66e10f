// The Request Monitor's live event list: merged by event hash, newest first, bounded.
import type { UsageEvent } from './types';

/** Most events the monitor keeps in memory. */
export const MAX_EVENTS = 2000;

/**
 * Merges a fetched page into the kept list: duplicates (same event hash) keep the newer
 * copy, the result is ordered newest first and cut to `limit` rows.
 */
export function mergeEvents(
  kept: readonly UsageEvent[],
  incoming: readonly UsageEvent[],
  limit = MAX_EVENTS,
): UsageEvent[] {
  const byHash = new Map<string, UsageEvent>();
  for (const event of kept) byHash.set(event.event_hash, event);
  for (const event of incoming) byHash.set(event.event_hash, event);
  return [...byHash.values()]
    .sort((left, right) => right.timestamp_ms - left.timestamp_ms || (left.event_hash < right.event_hash ? 1 : -1))
    .slice(0, limit);
}

/** Status text of an event: the HTTP status when known, else ok/failed. */
export function statusOf(event: Pick<UsageEvent, 'failed' | 'fail_status_code'>): string {
  if (event.fail_status_code && (event.failed || event.fail_status_code >= 400)) return String(event.fail_status_code);
  return event.failed ? 'failed' : 'ok';
}
