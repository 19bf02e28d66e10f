import { describe, expect, test } from 'vitest';

import { DASH, Formatter } from '../src/lib/format';

const en = new Formatter('en-US', 'UTC');
const zh = new Formatter('zh-CN', 'Asia/Shanghai');

describe('numbers and money', () => {
  test('integers group thousands per locale', () => {
    expect(en.int(1234567)).toBe('1,234,567');
    expect(en.int(null)).toBe(DASH);
    expect(en.int(Number.NaN)).toBe(DASH);
  });

  test('compact numbers stay exact below ten thousand', () => {
    expect(en.compact(9999)).toBe('9,999');
    expect(en.compact(1_900_000)).toBe('1.9M');
    expect(zh.compact(1_900_000)).toBe('190万');
  });

  test('an unpriced cost is a dash, never $0', () => {
    expect(en.money(null)).toBe(DASH);
    expect(en.money(undefined)).toBe(DASH);
    expect(en.money(0)).toBe('$0.00');
  });

  test('small costs keep their significant digits', () => {
    expect(en.money(0.0028)).toBe('$0.0028');
    expect(en.money(0.125)).toBe('$0.125');
    expect(en.money(12.5)).toBe('$12.50');
    expect(en.money(1234.567)).toBe('$1,234.57');
  });

  test('percentages', () => {
    expect(en.percent(0.953)).toBe('95.3%');
    expect(en.percent(1)).toBe('100%');
    expect(en.percent(null)).toBe(DASH);
  });

  test('durations from milliseconds', () => {
    expect(en.duration(850)).toBe('850 ms');
    expect(en.duration(1234)).toBe('1.2 s');
    expect(en.duration(185_000)).toBe('3 min 5 s');
    expect(en.duration(7_200_000)).toBe('2 h');
    expect(en.duration(null)).toBe(DASH);
    expect(zh.duration(185_000)).toBe('3 分 5 秒');
    expect(zh.duration(850)).toBe('850 毫秒');
  });

  test('bytes in powers of 1024', () => {
    expect(en.bytes(512)).toBe('512 B');
    expect(en.bytes(1536)).toBe('1.5 KB');
    expect(en.bytes(5 * 1024 * 1024)).toBe('5 MB');
  });
});

describe('times in the chosen zone', () => {
  const instant = Date.UTC(2025, 0, 1, 1, 30, 5);

  test('the same instant reads differently per zone', () => {
    expect(en.dateTime(instant)).toBe('01/01/2025, 01:30:05');
    expect(zh.dateTime(instant)).toBe('2025/01/01 09:30:05');
    expect(en.hour(instant)).toBe('01:30');
    expect(zh.day(instant)).toBe('01/01');
  });

  test('a missing or zero time is a dash', () => {
    expect(en.dateTime(0)).toBe(DASH);
    expect(en.time(undefined)).toBe(DASH);
  });
});
