// Numbers, money, durations and times for the chosen locale and time zone.
import { activeTimeZone, locale } from './settings';

export const DASH = '—';

const EN_UNITS = { ms: 'ms', s: 's', min: 'min', h: 'h' };
const ZH_UNITS = { ms: '毫秒', s: '秒', min: '分', h: '小时' };

export class Formatter {
  private readonly integer: Intl.NumberFormat;
  private readonly compactNumber: Intl.NumberFormat;
  private readonly percentFormat: Intl.NumberFormat;
  private readonly dateTimeFormat: Intl.DateTimeFormat;
  private readonly timeFormat: Intl.DateTimeFormat;
  private readonly dayFormat: Intl.DateTimeFormat;
  private readonly hourFormat: Intl.DateTimeFormat;

  constructor(
    readonly locale: string,
    readonly timeZone: string,
  ) {
    this.integer = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
    this.compactNumber = new Intl.NumberFormat(locale, {
      notation: 'compact',
      maximumFractionDigits: 1,
    });
    this.percentFormat = new Intl.NumberFormat(locale, {
      style: 'percent',
      minimumFractionDigits: 0,
      maximumFractionDigits: 1,
    });
    const zone = { timeZone, hourCycle: 'h23' as const };
    this.dateTimeFormat = new Intl.DateTimeFormat(locale, {
      ...zone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    this.timeFormat = new Intl.DateTimeFormat(locale, {
      ...zone,
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    this.dayFormat = new Intl.DateTimeFormat(locale, { ...zone, month: '2-digit', day: '2-digit' });
    this.hourFormat = new Intl.DateTimeFormat(locale, { ...zone, hour: '2-digit', minute: '2-digit' });
  }

  /** A whole number with grouping; `—` for missing values. */
  int(value: number | null | undefined): string {
    return isNumber(value) ? this.integer.format(value) : DASH;
  }

  /** 12.3K / 4.5M (or 1.2万 in Chinese). */
  compact(value: number | null | undefined): string {
    if (!isNumber(value)) return DASH;
    return Math.abs(value) < 10_000 ? this.integer.format(value) : this.compactNumber.format(value);
  }

  /** A ratio (0.953) as a percentage (95.3%). */
  percent(ratio: number | null | undefined): string {
    return isNumber(ratio) ? this.percentFormat.format(ratio) : DASH;
  }

  /**
   * US dollars. Small amounts keep enough digits to be told apart ($0.0028), large ones
   * get two decimals. `null` (an unpriced model) is shown as `—`, never as $0.
   */
  money(usd: number | null | undefined): string {
    if (!isNumber(usd)) return DASH;
    const magnitude = Math.abs(usd);
    const digits = magnitude === 0 ? 2 : magnitude < 0.01 ? 4 : magnitude < 1 ? 3 : 2;
    return new Intl.NumberFormat(this.locale, {
      style: 'currency',
      currency: 'USD',
      minimumFractionDigits: magnitude === 0 ? 2 : Math.min(digits, 2),
      maximumFractionDigits: digits,
    }).format(usd);
  }

  /** Milliseconds as `850 ms`, `1.2 s`, `3 min 5 s` (`850 毫秒`, `1.2 秒`, `3 分 5 秒`). */
  duration(ms: number | null | undefined): string {
    if (!isNumber(ms)) return DASH;
    const unit = this.locale.startsWith('zh') ? ZH_UNITS : EN_UNITS;
    if (Math.abs(ms) < 1000) return `${this.integer.format(Math.round(ms))} ${unit.ms}`;
    const seconds = ms / 1000;
    if (Math.abs(seconds) < 60) {
      return `${new Intl.NumberFormat(this.locale, { maximumFractionDigits: 1 }).format(seconds)} ${unit.s}`;
    }
    const minutes = Math.floor(seconds / 60);
    const rest = Math.round(seconds - minutes * 60);
    if (minutes < 60) return rest ? `${minutes} ${unit.min} ${rest} ${unit.s}` : `${minutes} ${unit.min}`;
    const hours = Math.floor(minutes / 60);
    const restMinutes = minutes - hours * 60;
    return restMinutes ? `${hours} ${unit.h} ${restMinutes} ${unit.min}` : `${hours} ${unit.h}`;
  }

  /** Bytes as `512 B`, `1.5 MB` (powers of 1024). */
  bytes(value: number | null | undefined): string {
    if (!isNumber(value)) return DASH;
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let amount = value;
    let unit = 0;
    while (Math.abs(amount) >= 1024 && unit < units.length - 1) {
      amount /= 1024;
      unit += 1;
    }
    const digits = unit === 0 ? 0 : 1;
    return `${new Intl.NumberFormat(this.locale, { maximumFractionDigits: digits }).format(amount)} ${units[unit]}`;
  }

  /** Date and time, e.g. `2025/01/01 09:30:00`, in the chosen zone. */
  dateTime(ms: number | null | undefined): string {
    return isNumber(ms) && ms > 0 ? this.dateTimeFormat.format(ms) : DASH;
  }

  time(ms: number | null | undefined): string {
    return isNumber(ms) && ms > 0 ? this.timeFormat.format(ms) : DASH;
  }

  /** Month and day (`01/31`). */
  day(ms: number): string {
    return this.dayFormat.format(ms);
  }

  /** Hour and minute (`09:00`). */
  hour(ms: number): string {
    return this.hourFormat.format(ms);
  }
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

let cached: Formatter | null = null;

/** The formatter for the current language and time zone. */
export function fmt(): Formatter {
  const wanted = [locale(), activeTimeZone()] as const;
  if (!cached || cached.locale !== wanted[0] || cached.timeZone !== wanted[1]) {
    cached = new Formatter(wanted[0], wanted[1]);
  }
  return cached;
}
