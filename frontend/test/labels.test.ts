import { expect, test } from 'vitest';

import { toCsv } from '../src/lib/csv';
import { mergeEvents, statusOf } from '../src/lib/events';
import { aliasMap, identityLabel, keyLabel, maskIdentifier } from '../src/lib/labels';
import type { UsageEvent } from '../src/lib/types';

const hash = 'ab'.repeat(32);

test('a key shows its alias, else a hash prefix', () => {
  const aliases = aliasMap([{ apiKeyHash: hash.toUpperCase(), alias: 'CI bot', updatedAtMs: 1 }]);
  expect(keyLabel(hash, aliases)).toBe('CI bot');
  expect(keyLabel('cd'.repeat(32), aliases)).toBe('sha256:cdcdcdcdcdcd');
  expect(keyLabel('', aliases)).toBe('—');
});

test('an account is named by its most human identity field', () => {
  expect(identityLabel({ auth_label_snapshot: 'Team A', source: 'x@y' })).toBe('Team A');
  expect(identityLabel({ account_snapshot: ' ', source: 'bob***@example.net' })).toBe('bob***@example.net');
  expect(identityLabel({ auth_index: '-', id: 'abc' })).toBe('abc');
  expect(identityLabel({})).toBe('—');
});

test('identifiers can be masked', () => {
  expect(maskIdentifier('alice@example.com')).toBe('al•••@example.com');
  expect(maskIdentifier('85ad019fd40e1278')).toBe('85ad•••1278');
  expect(maskIdentifier('abc')).toBe('•••');
});

const event = (hashValue: string, timestamp: number): UsageEvent =>
  ({ event_hash: hashValue, timestamp_ms: timestamp, failed: false }) as UsageEvent;

test('event pages merge by hash, newest first, bounded', () => {
  const kept = [event('a', 3), event('b', 2)];
  const merged = mergeEvents(kept, [event('c', 4), event('b', 2), event('d', 1)], 3);
  expect(merged.map((item) => item.event_hash)).toEqual(['c', 'a', 'b']);
});

test('an event status is its HTTP code when failed', () => {
  expect(statusOf({ failed: true, fail_status_code: 429 })).toBe('429');
  expect(statusOf({ failed: false, fail_status_code: 200 })).toBe('ok');
  expect(statusOf({ failed: true })).toBe('failed');
});

test('CSV quotes what needs quoting and defuses formulas', () => {
  const csv = toCsv(
    [{ name: 'a,b', note: 'say "hi"', formula: '=SUM(A1)', count: -3 }],
    [
      { header: 'name', value: (row) => row.name },
      { header: 'note', value: (row) => row.note },
      { header: 'formula', value: (row) => row.formula },
      { header: 'count', value: (row) => row.count },
    ],
  );
  expect(csv).toBe('name,note,formula,count\r\n"a,b","say ""hi""",\'=SUM(A1),-3\r\n');
});
