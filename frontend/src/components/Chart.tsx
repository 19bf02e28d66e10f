// Time-series charts drawn by uPlot: bars and lines on one or two value axes, collection
// gaps shaded on the time axis, colours taken from the theme (redrawn when it changes).
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { fmt } from '../lib/format';
import { t } from '../lib/i18n';
import { activeTimeZone } from '../lib/settings';
import { themeVersion } from '../lib/theme';
import { useStore } from '../lib/store';

export type ChartColor = 'c1' | 'c2' | 'c3' | 'c4' | 'c5' | 'good' | 'bad' | 'warn' | 'muted';

export interface SeriesSpec {
  label: string;
  kind: 'bars' | 'line' | 'area';
  /** `y` on the left, `y2` on the right. */
  scale?: 'y' | 'y2';
  color: ChartColor;
  values: (number | null)[];
  format?: (value: number) => string;
}

export interface Span {
  startMs: number;
  endMs: number;
}

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** Axis steps: whole hours for hourly buckets, whole days for daily ones. */
const HOUR_INCREMENTS = [HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY];
const DAY_INCREMENTS = [DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 182 * DAY, 365 * DAY];

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function withAlpha(color: string, alpha: number): string {
  const hex = /^#([0-9a-f]{6})$/i.exec(color);
  if (!hex) return color;
  const value = Number.parseInt(hex[1]!, 16);
  return `rgba(${(value >> 16) & 255}, ${(value >> 8) & 255}, ${value & 255}, ${alpha})`;
}

export function TimeChart({
  x,
  series,
  height = 240,
  granularity,
  gaps,
  onSelect,
  label,
  testId,
  xRange,
}: {
  x: number[];
  series: SeriesSpec[];
  height?: number;
  granularity: 'hour' | 'day';
  /** The whole time range to show (else the span of the data), e.g. today from midnight. */
  xRange?: [number, number];
  gaps?: Span[];
  onSelect?: (index: number) => void;
  label: string;
  testId?: string;
}) {
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const version = useStore(themeVersion);
  const selectRef = useRef(onSelect);
  selectRef.current = onSelect;

  useEffect(() => {
    const element = holder.current;
    if (!element) return;
    const text = cssVar('--text-muted');
    const grid = cssVar('--border');
    const formatter = fmt();
    const timeZone = activeTimeZone();
    const gapFill = withAlpha(cssVar('--bad'), 0.14);
    const step = granularity === 'day' ? DAY_INCREMENTS[0]! : HOUR_INCREMENTS[0]!;
    const tickFormat = (value: number) =>
      granularity === 'day' ? formatter.day(value) : formatter.hour(value);
    // Counts have no fractions: an axis step between whole numbers stays unlabelled.
    const axisValue = (value: number, spec?: SeriesSpec) =>
      spec?.format ? spec.format(value) : Number.isInteger(value) ? formatter.compact(value) : '';
    const leftSpec = series.find((spec) => (spec.scale ?? 'y') === 'y');
    const rightSpec = series.find((spec) => spec.scale === 'y2');
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      ms: 1,
      tzDate: (ms) => uPlot.tzDate(new Date(ms), timeZone),
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: {
        x: {
          time: true,
          // A single bucket still gets a readable axis: pad by one bucket each side.
          range: (_u, min, max) => xRange ?? (min === max ? [min - step, max + step] : [min, max]),
        },
        y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.08 : 1] }, y2: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.08 : 1] } },
      axes: [
        {
          stroke: text,
          grid: { stroke: grid, width: 1 },
          ticks: { stroke: grid, width: 1 },
          values: (_u, splits) => splits.map((value) => tickFormat(value)),
          incrs: granularity === 'day' ? DAY_INCREMENTS : HOUR_INCREMENTS,
          space: 60,
        },
        {
          scale: 'y',
          stroke: text,
          grid: { stroke: grid, width: 1 },
          ticks: { show: false },
          values: (_u, splits) => splits.map((value) => axisValue(value, leftSpec)),
          size: 56,
        },
        ...(rightSpec
          ? [
              {
                scale: 'y2',
                side: 1,
                stroke: text,
                grid: { show: false },
                ticks: { show: false },
                values: (_u: uPlot, splits: number[]) => splits.map((value) => axisValue(value, rightSpec)),
                size: 56,
              } satisfies uPlot.Axis,
            ]
          : []),
      ],
      series: [
        { label: t('col.time'), value: (_u, value) => (value == null ? '' : formatter.dateTime(value)) },
        ...series.map((spec): uPlot.Series => {
          const color = cssVar(`--chart-${spec.color}`);
          const base: uPlot.Series = {
            label: spec.label,
            scale: spec.scale ?? 'y',
            stroke: color,
            width: spec.kind === 'bars' ? 0 : 2,
            value: (_u, value) => (value == null ? '—' : spec.format ? spec.format(value) : formatter.int(value)),
            points: { show: spec.kind !== 'bars' && x.length < 60, size: 4 },
          };
          if (spec.kind === 'bars') {
            return { ...base, fill: withAlpha(color, 0.75), paths: uPlot.paths.bars!({ size: [0.7, 48], gap: 1 }) };
          }
          if (spec.kind === 'area') return { ...base, fill: withAlpha(color, 0.22) };
          return base;
        }),
      ],
      hooks: {
        drawClear: [
          (u) => {
            if (!gaps?.length) return;
            const { ctx } = u;
            ctx.save();
            ctx.fillStyle = gapFill;
            for (const gap of gaps) {
              const left = u.valToPos(gap.startMs, 'x', true);
              const right = u.valToPos(gap.endMs, 'x', true);
              const from = Math.max(left, u.bbox.left);
              const to = Math.min(right, u.bbox.left + u.bbox.width);
              if (to > from) ctx.fillRect(from, u.bbox.top, Math.max(to - from, 2), u.bbox.height);
            }
            ctx.restore();
          },
        ],
      },
    };
    const data: uPlot.AlignedData = [x, ...series.map((spec) => spec.values)];
    const chart = new uPlot(options, data, element);
    plot.current = chart;
    const onClick = () => {
      const index = chart.cursor.idx;
      if (index !== null && index !== undefined) selectRef.current?.(index);
    };
    chart.over.addEventListener('click', onClick);
    const observer = new ResizeObserver(() => {
      const width = Math.max(element.clientWidth, 200);
      if (Math.abs(width - chart.width) > 1) chart.setSize({ width, height });
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.over.removeEventListener('click', onClick);
      chart.destroy();
      plot.current = null;
    };
  }, [x, series, height, granularity, gaps, version, xRange?.[0], xRange?.[1]]);

  return (
    <div
      class={`chart ${onSelect ? 'chart-selectable' : ''}`}
      ref={holder}
      role="img"
      aria-label={label}
      data-testid={testId}
    />
  );
}
