// Calendar arithmetic in an IANA time zone, and the time ranges the pages offer.

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

interface WallClock {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const partFormats = new Map<string, Intl.DateTimeFormat>();

function partsFormat(timeZone: string): Intl.DateTimeFormat {
  let format = partFormats.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    partFormats.set(timeZone, format);
  }
  return format;
}

/** The wall-clock reading of instant `ms` in `timeZone`. */
export function wallClock(ms: number, timeZone: string): WallClock {
  const values: Record<string, number> = {};
  for (const part of partsFormat(timeZone).formatToParts(ms)) {
    if (part.type !== 'literal') values[part.type] = Number(part.value);
  }
  return {
    year: values.year!,
    month: values.month!,
    day: values.day!,
    hour: values.hour! % 24,
    minute: values.minute!,
    second: values.second!,
  };
}

/** The zone's offset from UTC at instant `ms`, in milliseconds (east positive). */
export function zoneOffsetMs(ms: number, timeZone: string): number {
  const wall = wallClock(ms, timeZone);
  const asUtc = Date.UTC(wall.year, wall.month - 1, wall.day, wall.hour, wall.minute, wall.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/**
 * The instant of a wall-clock time in `timeZone`. A time that does not exist (spring
 * forward) resolves to the instant after the gap; a repeated time to its first instant.
 */
export function instantOf(
  year: number,
  month: number,
  day: number,
  hour: number,
  timeZone: string,
): number {
  const wall = Date.UTC(year, month - 1, day, hour);
  // Two refinements converge for every real zone rule (offsets change at most once a day).
  let guess = wall - zoneOffsetMs(wall, timeZone);
  guess = wall - zoneOffsetMs(guess, timeZone);
  const earlier = wall - zoneOffsetMs(guess - HOUR_MS, timeZone);
  if (earlier < guess && wallMatches(earlier, year, month, day, hour, timeZone)) return earlier;
  return guess;
}

function wallMatches(
  ms: number,
  year: number,
  month: number,
  day: number,
  hour: number,
  timeZone: string,
): boolean {
  const wall = wallClock(ms, timeZone);
  return wall.year === year && wall.month === month && wall.day === day && wall.hour === hour;
}

/** Local midnight of the day that contains `ms`. */
export function startOfDay(ms: number, timeZone: string): number {
  const wall = wallClock(ms, timeZone);
  return instantOf(wall.year, wall.month, wall.day, 0, timeZone);
}

/** Local midnight `days` calendar days after the day that contains `ms`. */
export function addDays(ms: number, days: number, timeZone: string): number {
  const wall = wallClock(ms, timeZone);
  const shifted = new Date(Date.UTC(wall.year, wall.month - 1, wall.day + days));
  return instantOf(
    shifted.getUTCFullYear(),
    shifted.getUTCMonth() + 1,
    shifted.getUTCDate(),
    0,
    timeZone,
  );
}

export interface TimeRange {
  fromMs: number;
  toMs: number;
}

export type MonitorRange = 'today' | 'yesterday' | '7d' | '14d' | '30d' | 'all' | 'custom';
export type AnalyticsRange = '24h' | 'today' | 'yesterday' | '7d' | '30d' | 'custom';

/**
 * Request Monitor ranges: calendar days counted back from local midnight; `all` starts
 * at 1 ms. The end is `now` (exclusive ranges end just after now so the newest event counts).
 */
export function monitorRange(
  range: MonitorRange,
  nowMs: number,
  timeZone: string,
  custom?: TimeRange,
): TimeRange {
  const today = startOfDay(nowMs, timeZone);
  const end = nowMs + 1;
  switch (range) {
    case 'today':
      return { fromMs: today, toMs: end };
    case 'yesterday':
      return { fromMs: addDays(today, -1, timeZone), toMs: today };
    case '7d':
      return { fromMs: addDays(today, -6, timeZone), toMs: end };
    case '14d':
      return { fromMs: addDays(today, -13, timeZone), toMs: end };
    case '30d':
      return { fromMs: addDays(today, -29, timeZone), toMs: end };
    case 'all':
      return { fromMs: 1, toMs: end };
    case 'custom':
      return custom && custom.toMs > custom.fromMs ? custom : { fromMs: today, toMs: end };
  }
}

/** Usage Analytics ranges: rolling windows plus calendar days. */
export function analyticsRange(
  range: AnalyticsRange,
  nowMs: number,
  timeZone: string,
  custom?: TimeRange,
): TimeRange {
  const today = startOfDay(nowMs, timeZone);
  const end = nowMs + 1;
  switch (range) {
    case '24h':
      return { fromMs: nowMs - DAY_MS, toMs: end };
    case 'today':
      return { fromMs: today, toMs: end };
    case 'yesterday':
      return { fromMs: addDays(today, -1, timeZone), toMs: today };
    case '7d':
      return { fromMs: nowMs - 7 * DAY_MS, toMs: end };
    case '30d':
      return { fromMs: nowMs - 30 * DAY_MS, toMs: end };
    case 'custom':
      return custom && custom.toMs > custom.fromMs ? custom : { fromMs: nowMs - DAY_MS, toMs: end };
  }
}

export type Granularity = 'hour' | 'day';

/** Hourly buckets up to 7 days (a single day for the monitor), daily beyond. */
export function autoGranularity(range: TimeRange, maxHourlyDays: number): Granularity {
  return range.toMs - range.fromMs <= maxHourlyDays * DAY_MS + 1 ? 'hour' : 'day';
}

/** `YYYY-MM-DDTHH:mm` for a `datetime-local` input, in `timeZone`. */
export function toLocalInput(ms: number, timeZone: string): string {
  const wall = wallClock(ms, timeZone);
  const pad = (value: number) => String(value).padStart(2, '0');
  return `${wall.year}-${pad(wall.month)}-${pad(wall.day)}T${pad(wall.hour)}:${pad(wall.minute)}`;
}

/** The instant of a `datetime-local` value read in `timeZone`; NaN when malformed. */
export function fromLocalInput(value: string, timeZone: string): number {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value);
  if (!match) return Number.NaN;
  const [, year, month, day, hour, minute] = match.map(Number) as [number, number, number, number, number, number];
  return instantOf(year, month, day, hour, timeZone) + minute * MINUTE_MS;
}

/** Weekday (0 = Sunday) and hour of `ms` in `timeZone`. */
export function weekdayHour(ms: number, timeZone: string): { weekday: number; hour: number } {
  const wall = wallClock(ms, timeZone);
  const weekday = new Date(Date.UTC(wall.year, wall.month - 1, wall.day)).getUTCDay();
  return { weekday, hour: wall.hour };
}
