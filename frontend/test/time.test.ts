import { describe, expect, test } from 'vitest';

import {
  addDays,
  analyticsRange,
  autoGranularity,
  DAY_MS,
  fromLocalInput,
  instantOf,
  monitorRange,
  startOfDay,
  toLocalInput,
  weekdayHour,
  zoneOffsetMs,
} from '../src/lib/time';

describe('zone arithmetic', () => {
  test('offsets east and west of UTC', () => {
    expect(zoneOffsetMs(Date.UTC(2025, 0, 1), 'Asia/Shanghai')).toBe(8 * 3_600_000);
    expect(zoneOffsetMs(Date.UTC(2025, 6, 1), 'America/New_York')).toBe(-4 * 3_600_000);
    expect(zoneOffsetMs(Date.UTC(2025, 0, 1), 'Asia/Kathmandu')).toBe(5.75 * 3_600_000);
  });

  test('local midnight of the day that contains an instant', () => {
    // 2025-01-01T20:00Z is already 2 January in Shanghai.
    expect(startOfDay(Date.UTC(2025, 0, 1, 20), 'Asia/Shanghai')).toBe(Date.UTC(2025, 0, 1, 16));
    expect(startOfDay(Date.UTC(2025, 0, 1, 3), 'America/New_York')).toBe(Date.UTC(2024, 11, 31, 5));
    expect(startOfDay(Date.UTC(2025, 0, 1, 12), 'UTC')).toBe(Date.UTC(2025, 0, 1));
  });

  test('calendar days across a daylight-saving change are 23 or 25 hours long', () => {
    const before = instantOf(2024, 3, 9, 0, 'America/New_York');
    const after = addDays(before, 1, 'America/New_York');
    expect(after - before).toBe(DAY_MS);
    const springDay = addDays(before, 2, 'America/New_York') - after;
    expect(springDay).toBe(DAY_MS - 3_600_000);
    const fallStart = instantOf(2024, 11, 3, 0, 'America/New_York');
    expect(addDays(fallStart, 1, 'America/New_York') - fallStart).toBe(DAY_MS + 3_600_000);
  });

  test('a repeated wall time resolves to its first instant', () => {
    // 01:00 happens twice in New York on 2024-11-03: first at 05:00Z.
    expect(instantOf(2024, 11, 3, 1, 'America/New_York')).toBe(Date.UTC(2024, 10, 3, 5));
  });

  test('datetime-local values round-trip in the chosen zone', () => {
    const instant = Date.UTC(2025, 4, 6, 0, 30);
    expect(toLocalInput(instant, 'Asia/Shanghai')).toBe('2025-05-06T08:30');
    expect(fromLocalInput('2025-05-06T08:30', 'Asia/Shanghai')).toBe(instant);
    expect(fromLocalInput('not a date', 'UTC')).toBeNaN();
  });

  test('weekday and hour in the zone', () => {
    // 2025-01-05 is a Sunday; 23:30Z is already Monday 07:30 in Shanghai.
    expect(weekdayHour(Date.UTC(2025, 0, 5, 23, 30), 'Asia/Shanghai')).toEqual({ weekday: 1, hour: 7 });
    expect(weekdayHour(Date.UTC(2025, 0, 5, 23, 30), 'UTC')).toEqual({ weekday: 0, hour: 23 });
  });
});

describe('page ranges', () => {
  const now = Date.UTC(2025, 0, 10, 15);

  test('monitor ranges count calendar days back from local midnight', () => {
    const today = Date.UTC(2025, 0, 10);
    expect(monitorRange('today', now, 'UTC')).toEqual({ fromMs: today, toMs: now + 1 });
    expect(monitorRange('yesterday', now, 'UTC')).toEqual({ fromMs: today - DAY_MS, toMs: today });
    expect(monitorRange('7d', now, 'UTC').fromMs).toBe(today - 6 * DAY_MS);
    expect(monitorRange('30d', now, 'UTC').fromMs).toBe(today - 29 * DAY_MS);
    expect(monitorRange('all', now, 'UTC').fromMs).toBe(1);
  });

  test('a custom range is used only when it is a real range', () => {
    const custom = { fromMs: 100, toMs: 200 };
    expect(monitorRange('custom', now, 'UTC', custom)).toEqual(custom);
    expect(monitorRange('custom', now, 'UTC', { fromMs: 200, toMs: 100 }).fromMs).toBe(Date.UTC(2025, 0, 10));
  });

  test('analytics ranges are rolling windows', () => {
    expect(analyticsRange('24h', now, 'UTC')).toEqual({ fromMs: now - DAY_MS, toMs: now + 1 });
    expect(analyticsRange('7d', now, 'UTC').fromMs).toBe(now - 7 * DAY_MS);
  });

  test('hourly buckets up to the limit, daily beyond', () => {
    expect(autoGranularity({ fromMs: 0, toMs: 7 * DAY_MS }, 7)).toBe('hour');
    expect(autoGranularity({ fromMs: 0, toMs: 8 * DAY_MS }, 7)).toBe('day');
  });
});
