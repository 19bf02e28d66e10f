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

/** The ranges both pages offer the same way; `undefined` for the others. */
function commonRange(range: string, nowMs: number, timeZone: string, custom: TimeRange | undefined, fallback: TimeRange): TimeRange | undefined {
  const today = startOfDay(nowMs, timeZone);
  if (range === 'today') return { fromMs: today, toMs: nowMs + 1 };
  if (range === 'yesterday') return { fromMs: addDays(today, -1, timeZone), toMs: today };
  if (range === 'custom') return custom && custom.toMs > custom.fromMs ? custom : fallback;
  return undefined;
}

/**
 * Request Monitor ranges: calendar days counted back from local midnight; `all` starts
 * at 1 ms. The end is just after `now` (ranges are half-open, so the newest event counts).
 */
export function monitorRange(range: MonitorRange, nowMs: number, timeZone: string, custom?: TimeRange): TimeRange {
  const today = startOfDay(nowMs, timeZone);
  const common = commonRange(range, nowMs, timeZone, custom, { fromMs: today, toMs: nowMs + 1 });
  if (common) return common;
  const days = range === '7d' ? 6 : range === '14d' ? 13 : range === '30d' ? 29 : null;
  return { fromMs: days === null ? 1 : addDays(today, -days, timeZone), toMs: nowMs + 1 };
}

/** Usage Analytics ranges: rolling windows plus calendar days. */
export function analyticsRange(range: AnalyticsRange, nowMs: number, timeZone: string, custom?: TimeRange): TimeRange {
  const last24h = { fromMs: nowMs - DAY_MS, toMs: nowMs + 1 };
  const common = commonRange(range, nowMs, timeZone, custom, last24h);
  if (common) return common;
  const days = range === '7d' ? 7 : range === '30d' ? 30 : 1;
  return { fromMs: nowMs - days * DAY_MS, toMs: nowMs + 1 };
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
