// Usage Analytics: overview, trends, models, API keys, credentials and heatmap tabs with
// drill-down, each table downloadable as CSV.
import { useEffect, useMemo, useState } from 'preact/hooks';

import { useAliases } from '../lib/aliases';
import { saveCsv, toCsv } from '../lib/csv';
import { api } from '../lib/endpoints';
import { fmt } from '../lib/format';
import { t, tMaybe } from '../lib/i18n';
import { identityLabel, keyLabel } from '../lib/labels';
import { analyticsBody, EMPTY_FILTERS, toFilters, type FilterState } from '../lib/query';
import { useDebounced, useResource } from '../lib/resource';
import { navigate, route } from '../lib/router';
import { activeTimeZone, settings } from '../lib/settings';
import { storage, useStore } from '../lib/store';
import { addDays, analyticsRange, autoGranularity, HOUR_MS, DAY_MS, startOfDay, type AnalyticsRange, type TimeRange } from '../lib/time';
import type { AnalyticsResponse, GroupStat, HeatmapCell, Include, KeyTimelinePoint, ModelStat, TimelinePoint, UsageEvent } from '../lib/types';
import { TimeChart, type ChartColor, type SeriesSpec } from '../components/Chart';
import { FilterBar } from '../components/FilterBar';
import { RangePicker } from '../components/RangePicker';
import { DataTable } from '../components/Table';
import { CollectionBanner, EventDetail, EventTable, SummaryStats } from '../components/Usage';
import { Badge, Card, Empty, Segmented, ShareBar, Tabs } from '../components/ui';

type Tab = 'overview' | 'trends' | 'models' | 'apiKeys' | 'credentials' | 'heatmap';
type GranularityChoice = 'auto' | 'hour' | 'day';
const TABS: Tab[] = ['overview', 'trends', 'models', 'apiKeys', 'credentials', 'heatmap'];

interface ViewState {
  range: AnalyticsRange;
  custom?: TimeRange;
  granularity: GranularityChoice;
  filters: FilterState;
}

const STATE_KEY = 'cpamp.analytics';

interface Scope {
  range: TimeRange;
  now: number;
  granularity: 'hour' | 'day';
}

export function AnalyticsPage() {
  const current = useStore(route);
  const tabParam = current.params.get('tab') as Tab | null;
  const tab: Tab = tabParam && TABS.includes(tabParam) ? tabParam : 'overview';
  const [state, setState] = useState<ViewState>(() => {
    const saved = storage.getJson<Partial<ViewState>>(STATE_KEY) ?? {};
    return { range: saved.range ?? '24h', custom: saved.custom, granularity: saved.granularity ?? 'auto', filters: { ...EMPTY_FILTERS, ...saved.filters, search: '' } };
  });
  const [selected, setSelected] = useState<string | null>(null);
  const [bucket, setBucket] = useState<number | null>(null);
  const [open, setOpen] = useState<UsageEvent | null>(null);
  const timeZone = activeTimeZone();
  const search = useDebounced(state.filters.search, 400);
  const filters = useMemo(() => ({ ...state.filters, search }), [state.filters, search]);

  useEffect(() => storage.setJson(STATE_KEY, { ...state, filters: { ...state.filters, search: '' } }), [state]);
  useEffect(() => {
    setSelected(null);
    setBucket(null);
  }, [tab]);

  const update = (change: Partial<ViewState>) => setState((previous) => ({ ...previous, ...change }));
  const scopeAt = (now: number): Scope => {
    const range = analyticsRange(state.range, now, timeZone, state.custom);
    const granularity = state.granularity === 'auto' ? autoGranularity(range, 7) : state.granularity;
    return { range, now, granularity };
  };
  const scopeKey = JSON.stringify([state.range, state.custom, state.granularity, timeZone]);
  const mainKey = JSON.stringify([scopeKey, filters, tab]);

  const selectors = useResource(`analytics-selectors:${JSON.stringify([scopeKey, search])}`, (signal) => {
    const scope = scopeAt(Date.now());
    return api.analytics(analyticsBody(scope.range, scope.now, timeZone, { ...EMPTY_FILTERS, search }, { filter_options: true, filter_selectors: true }), signal);
  });

  const main = useResource(`analytics:${mainKey}`, (signal) => {
    const scope = scopeAt(Date.now());
    const include: Include = { summary: true, summary_profile: 'compact', granularity: scope.granularity };
    switch (tab) {
      case 'overview':
        Object.assign(include, { summary_percentiles: true, summary_comparison: true, timeline: true, model_stats: true, channel_share: true, api_key_stats: true, anomaly_points: true });
        break;
      case 'trends':
        Object.assign(include, { summary_comparison: true, timeline: true, model_stats: true, api_key_stats: true, anomaly_points: true });
        break;
      case 'models':
        Object.assign(include, { timeline: true, model_stats: true, api_key_stats: true });
        break;
      case 'apiKeys':
        include.api_key_stats = true;
        break;
      case 'credentials':
        include.credential_stats = true;
        break;
      case 'heatmap':
        include.heatmap = true;
        break;
    }
    return api.analytics(analyticsBody(scope.range, scope.now, timeZone, filters, include), signal).then((data) => ({ data, scope }));
  });

  const response = main.data?.data;
  const scope = main.data?.scope;

  // Secondary requests: entity comparison (top keys), the selected row, the drill-down.
  const topKeys = useMemo(
    () => (response?.api_key_stats ?? []).filter((row) => row.api_key_hash).sort((left, right) => right.calls - left.calls).slice(0, 4).map((row) => row.api_key_hash!),
    [response],
  );
  const comparison = useResource(
    (tab === 'overview' || tab === 'trends') && scope && topKeys.length ? `analytics-compare:${mainKey}:${topKeys.join(',')}` : null,
    (signal) => api.analytics({ ...analyticsBody(scope!.range, scope!.now, timeZone, filters, { granularity: scope!.granularity, api_key_timeline: true }), filters: { ...toFilters(filters), api_key_hashes: topKeys } }, signal),
  );
  const detail = useResource(
    selected && scope && (tab === 'models' || tab === 'apiKeys' || tab === 'credentials') ? `analytics-detail:${mainKey}:${selected}` : null,
    (signal) => {
      const base = analyticsBody(scope!.range, scope!.now, timeZone, filters, { granularity: scope!.granularity });
      const extra = toFilters(filters);
      if (tab === 'models') return api.analytics({ ...base, filters: { ...extra, models: [selected!] }, include: { ...base.include, timeline: true, api_key_stats: true, summary: true, summary_profile: 'compact', summary_percentiles: true } }, signal);
      if (tab === 'apiKeys') return api.analytics({ ...base, filters: { ...extra, api_key_hashes: [selected!] }, include: { ...base.include, timeline: true, model_stats: true } }, signal);
      return api.analytics({ ...base, filters: { ...extra, credential_ids: [selected!] }, include: { ...base.include, credential_timeline: true } }, signal);
    },
  );
  const drill = useResource(
    bucket !== null && scope ? `analytics-drill:${mainKey}:${bucket}` : null,
    (signal) => {
      const width = scope!.granularity === 'hour' ? HOUR_MS : DAY_MS;
      return api.analytics(analyticsBody(scope!.range, scope!.now, timeZone, filters, { drilldown_preview: { from_ms: bucket!, to_ms: bucket! + width, limit: 12 } }), signal);
    },
  );

  return (
    <div class="page" data-testid="page-analytics">
      <CollectionBanner />
      <div class="toolbar">
        <RangePicker<AnalyticsRange> value={state.range} custom={state.custom} choices={['24h', 'today', 'yesterday', '7d', '30d', 'custom']} onChange={(range, custom) => update({ range, custom })} />
        <Segmented<GranularityChoice>
          label={t('analytics.granularity')}
          value={state.granularity}
          onChange={(granularity) => update({ granularity })}
          choices={[
            { value: 'auto', label: t('analytics.granularityAuto') },
            { value: 'hour', label: t('analytics.granularityHour') },
            { value: 'day', label: t('analytics.granularityDay') },
          ]}
        />
      </div>
      <FilterBar value={state.filters} onChange={(next) => update({ filters: next })} options={selectors.data?.filter_options} />
      <Tabs<Tab> label={t('analytics.tabs')} value={tab} onChange={(next) => navigate('/usage-analytics', { tab: next }, true)} tabs={TABS.map((value) => ({ value, label: t(`analytics.tab.${value}`) }))} />
      <Card title={t('analytics.summary')} resource={main} class="span-full">
        {response?.summary && <SummaryStats summary={response.summary} comparison={response.summary_comparison} unpriced={response.unpriced_models} />}
      </Card>
      {response && scope && (
        <div class="tab-content" role="tabpanel" data-testid={`analytics-tab-${tab}`}>
          {tab === 'overview' && (
            <Overview response={response} scope={scope} comparison={comparison.data?.api_key_timeline} onBucket={setBucket} />
          )}
          {tab === 'trends' && <Trends response={response} scope={scope} comparison={comparison.data?.api_key_timeline} onBucket={setBucket} />}
          {tab === 'models' && <Models response={response} scope={scope} selected={selected} onSelect={setSelected} detail={detail.data} />}
          {tab === 'apiKeys' && <Keys rows={response.api_key_stats ?? []} scope={scope} selected={selected} onSelect={setSelected} detail={detail.data} />}
          {tab === 'credentials' && <Credentials rows={response.credential_stats ?? []} scope={scope} selected={selected} onSelect={setSelected} detail={detail.data} />}
          {tab === 'heatmap' && <Heatmap cells={response.heatmap ?? []} scope={scope} filters={filters} />}
        </div>
      )}
      {bucket !== null && (
        <Card
          title={t('analytics.drilldown', { time: fmt().dateTime(bucket) })}
          resource={drill}
          class="span-full"
          actions={
            <button type="button" class="button small" onClick={() => setBucket(null)}>
              {t('common.close')}
            </button>
          }
        >
          {drill.data && <EventTable events={drill.data.drilldown_preview?.items ?? []} onOpen={setOpen} label={t('analytics.drilldownLabel')} csvName="drilldown.csv" />}
        </Card>
      )}
      {open && <EventDetail event={open} onClose={() => setOpen(null)} />}
    </div>
  );
}

function useLanguage() {
  return settings.get().language;
}

function timelineCsv(points: TimelinePoint[]) {
  saveCsv(
    toCsv(points, [
      { header: 'bucket', value: (point) => new Date(point.bucket_ms).toISOString() },
      { header: 'label', value: (point) => point.label },
      { header: 'calls', value: (point) => point.calls },
      { header: 'success', value: (point) => point.success },
      { header: 'failure', value: (point) => point.failure },
      { header: 'input_tokens', value: (point) => point.input_tokens },
      { header: 'output_tokens', value: (point) => point.output_tokens },
      { header: 'cached_tokens', value: (point) => point.cached_tokens },
      { header: 'cache_read_tokens', value: (point) => point.cache_read_tokens },
      { header: 'reasoning_tokens', value: (point) => point.reasoning_tokens },
      { header: 'total_tokens', value: (point) => point.total_tokens },
      { header: 'cost_usd', value: (point) => point.cost },
      { header: 'average_latency_ms', value: (point) => point.average_latency_ms },
      { header: 'p95_latency_ms', value: (point) => point.p95_latency_ms },
    ]),
    'usage-timeline.csv',
  );
}

function TrendChart({ points, granularity, onBucket, metric }: { points: TimelinePoint[]; granularity: 'hour' | 'day'; onBucket?: (ms: number) => void; metric: 'cost' | 'success' }) {
  const f = fmt();
  const language = useLanguage();
  const x = useMemo(() => points.map((point) => point.bucket_ms), [points]);
  const series = useMemo<SeriesSpec[]>(
    () => [
      { label: t('summary.tokens'), kind: 'bars', color: 'c1', values: points.map((point) => point.total_tokens), format: (value) => f.compact(value) },
      { label: t('summary.calls'), kind: 'line', scale: 'y2', color: 'c2', values: points.map((point) => point.calls) },
      metric === 'cost'
        ? { label: t('summary.cost'), kind: 'line', scale: 'y2', color: 'c3', values: points.map((point) => point.cost), format: (value) => f.money(value) }
        : { label: t('summary.successRate'), kind: 'line', scale: 'y2', color: 'good', values: points.map((point) => point.success_rate), format: (value) => f.percent(value) },
    ],
    [points, language, metric],
  );
  if (points.length === 0) return <Empty />;
  return <TimeChart x={x} series={series} granularity={granularity} onSelect={onBucket ? (index) => onBucket(points[index]!.bucket_ms) : undefined} label={t('analytics.trendChart')} testId="trend-chart" />;
}

function Anomalies({ response }: { response: AnalyticsResponse }) {
  const f = fmt();
  const rows = response.anomaly_points ?? [];
  if (rows.length === 0) return <Empty>{t('analytics.noAnomalies')}</Empty>;
  return (
    <ul class="anomaly-list">
      {rows.slice(0, 10).map((row) => (
        <li key={row.bucket_ms}>
          <Badge tone={row.severity === 'high' ? 'bad' : row.severity === 'medium' ? 'warn' : undefined}>{t(`severity.${row.severity}`)}</Badge>
          <span>{f.dateTime(row.bucket_ms)}</span>
          <span class="muted">{row.metric_keys.map((key) => tMaybe(`anomaly.${key}`) ?? key).join(', ')}</span>
        </li>
      ))}
    </ul>
  );
}

function ShareList<T>({ rows, label, value, format }: { rows: T[]; label: (row: T) => string; value: (row: T) => number; format: (row: T) => string }) {
  const total = rows.reduce((sum, row) => sum + value(row), 0) || 1;
  if (rows.length === 0) return <Empty />;
  return (
    <ul class="rank-list">
      {rows.slice(0, 8).map((row) => (
        <li key={label(row)}>
          <div class="rank-line">
            <span class="rank-name">{label(row)}</span>
            <span class="rank-value">{format(row)}</span>
          </div>
          <ShareBar share={value(row) / total} />
        </li>
      ))}
    </ul>
  );
}

function EntityComparison({ points, base, granularity }: { points: KeyTimelinePoint[] | undefined; base: TimelinePoint[]; granularity: 'hour' | 'day' }) {
  const aliases = useAliases();
  const language = useLanguage();
  const x = useMemo(() => base.map((point) => point.bucket_ms), [base]);
  const series = useMemo<SeriesSpec[]>(() => {
    const byKey = new Map<string, Map<number, number>>();
    for (const point of points ?? []) {
      const key = point.api_key_hash ?? '';
      if (!byKey.has(key)) byKey.set(key, new Map());
      byKey.get(key)!.set(point.bucket_ms, point.calls);
    }
    const colors: ChartColor[] = ['c1', 'c2', 'c3', 'c4'];
    return [...byKey.entries()].slice(0, 4).map(([key, values], index) => ({
      label: keyLabel(key, aliases),
      kind: 'line' as const,
      color: colors[index]!,
      values: x.map((bucket) => values.get(bucket) ?? 0),
    }));
  }, [points, x, aliases, language]);
  if (!points || series.length === 0) return <Empty>{t('analytics.noKeys')}</Empty>;
  return <TimeChart x={x} series={series} granularity={granularity} label={t('analytics.compareKeys')} testId="compare-chart" />;
}

function Overview({ response, scope, comparison, onBucket }: { response: AnalyticsResponse; scope: Scope; comparison?: KeyTimelinePoint[]; onBucket: (ms: number) => void }) {
  const f = fmt();
  const aliases = useAliases();
  const points = response.timeline ?? [];
  return (
    <div class="grid">
      <Card title={t('analytics.usageTrend')} subtitle={t('analytics.clickBucket')} class="span-2" actions={points.length > 0 && <button type="button" class="button small" onClick={() => timelineCsv(points)}>{t('common.downloadCsv')}</button>}>
        <TrendChart points={points} granularity={scope.granularity} onBucket={onBucket} metric="cost" />
      </Card>
      <Card title={t('analytics.anomalies')}>
        <Anomalies response={response} />
      </Card>
      <Card title={t('analytics.topModels')}>
        <ShareList rows={response.model_stats ?? []} label={(row) => row.model} value={(row) => row.calls} format={(row) => `${f.int(row.calls)} · ${f.money(row.cost)}`} />
      </Card>
      <Card title={t('analytics.topKeys')}>
        <ShareList rows={response.api_key_stats ?? []} label={(row) => keyLabel(row.api_key_hash || row.id, aliases)} value={(row) => row.calls} format={(row) => `${f.int(row.calls)} · ${f.money(row.cost)}`} />
      </Card>
      <Card title={t('analytics.channels')}>
        <ShareList rows={response.channel_share ?? []} label={(row) => `${identityLabel(row)}${row.auth_provider_snapshot ? ` · ${row.auth_provider_snapshot}` : ''}`} value={(row) => row.calls} format={(row) => f.int(row.calls)} />
      </Card>
      <Card title={t('analytics.compareKeys')} class="span-full">
        <EntityComparison points={comparison} base={points} granularity={scope.granularity} />
      </Card>
    </div>
  );
}

function Trends({ response, scope, comparison, onBucket }: { response: AnalyticsResponse; scope: Scope; comparison?: KeyTimelinePoint[]; onBucket: (ms: number) => void }) {
  const f = fmt();
  const language = useLanguage();
  const points = response.timeline ?? [];
  const x = useMemo(() => points.map((point) => point.bucket_ms), [points]);
  const health = useMemo<SeriesSpec[]>(
    () => [
      { label: t('summary.successRate'), kind: 'line', color: 'good', values: points.map((point) => point.success_rate), format: (value) => f.percent(value) },
      { label: t('analytics.failureRate'), kind: 'line', color: 'bad', values: points.map((point) => point.failure_rate), format: (value) => f.percent(value) },
      { label: t('summary.p95Label'), kind: 'line', scale: 'y2', color: 'c4', values: points.map((point) => point.p95_latency_ms), format: (value) => f.duration(value) },
    ],
    [points, language],
  );
  // Stacked areas: each series is drawn as the running sum, top layer first.
  const structure = useMemo<SeriesSpec[]>(() => {
    const layers = [
      { key: 'input', color: 'c1' as ChartColor, value: (point: TimelinePoint) => Math.max(point.input_tokens - point.cached_tokens - point.cache_read_tokens, 0) },
      { key: 'cached', color: 'c5' as ChartColor, value: (point: TimelinePoint) => point.cached_tokens + point.cache_read_tokens },
      { key: 'output', color: 'c2' as ChartColor, value: (point: TimelinePoint) => point.output_tokens },
      { key: 'reasoning', color: 'c3' as ChartColor, value: (point: TimelinePoint) => point.reasoning_tokens },
    ] as const;
    const sums = points.map(() => 0);
    const stacked = layers.map((layer) => {
      const own = points.map((point) => layer.value(point));
      const values = own.map((value, index) => (sums[index]! += value));
      return { layer, own, values };
    });
    return stacked.reverse().map(({ layer, own, values }) => ({
      label: t(`mix.${layer.key}`),
      kind: 'area' as const,
      color: layer.color,
      values,
      format: (value: number) => {
        const index = values.indexOf(value);
        return f.compact(index >= 0 ? own[index]! : value);
      },
    }));
  }, [points, language]);
  return (
    <div class="grid">
      <Card title={t('analytics.usageTrend')} subtitle={t('analytics.clickBucket')} class="span-2" actions={points.length > 0 && <button type="button" class="button small" onClick={() => timelineCsv(points)}>{t('common.downloadCsv')}</button>}>
        <TrendChart points={points} granularity={scope.granularity} onBucket={onBucket} metric="success" />
      </Card>
      <Card title={t('analytics.anomalies')}>
        <Anomalies response={response} />
      </Card>
      <Card title={t('analytics.health')} class="span-2">
        {points.length ? <TimeChart x={x} series={health} granularity={scope.granularity} label={t('analytics.health')} /> : <Empty />}
      </Card>
      <Card title={t('analytics.tokenStructure')}>
        {points.length ? <TimeChart x={x} series={structure} granularity={scope.granularity} height={200} label={t('analytics.tokenStructure')} /> : <Empty />}
      </Card>
      <Card title={t('analytics.compareKeys')} class="span-full">
        <EntityComparison points={comparison} base={points} granularity={scope.granularity} />
      </Card>
    </div>
  );
}

function modelColumns(f: ReturnType<typeof fmt>) {
  return [
    { key: 'model', header: t('col.model'), cell: (row: ModelStat) => row.model, csv: (row: ModelStat) => row.model, sort: (row: ModelStat) => row.model },
    { key: 'calls', header: t('col.calls'), numeric: true, cell: (row: ModelStat) => f.int(row.calls), csv: (row: ModelStat) => row.calls, sort: (row: ModelStat) => row.calls },
    { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (row: ModelStat) => f.compact(row.total_tokens), csv: (row: ModelStat) => row.total_tokens, sort: (row: ModelStat) => row.total_tokens },
    { key: 'cost', header: t('col.cost'), numeric: true, cell: (row: ModelStat) => f.money(row.cost), csv: (row: ModelStat) => row.cost, sort: (row: ModelStat) => row.cost ?? -1 },
    { key: 'success', header: t('col.successRate'), numeric: true, cell: (row: ModelStat) => f.percent(row.success_rate), csv: (row: ModelStat) => row.success_rate, sort: (row: ModelStat) => row.success_rate },
    { key: 'cache', header: t('col.cacheRate'), numeric: true, cell: (row: ModelStat) => f.percent(row.cache_hit_rate), csv: (row: ModelStat) => row.cache_hit_rate, sort: (row: ModelStat) => row.cache_hit_rate },
  ];
}

function Models({ response, scope, selected, onSelect, detail }: { response: AnalyticsResponse; scope: Scope; selected: string | null; onSelect: (model: string) => void; detail?: AnalyticsResponse }) {
  const f = fmt();
  const aliases = useAliases();
  const rows = response.model_stats ?? [];
  const total = rows.reduce((sum, row) => sum + row.calls, 0) || 1;
  const costRows = [...rows].sort((left, right) => (right.cost ?? 0) - (left.cost ?? 0)).slice(0, 5);
  return (
    <div class="grid">
      <Card title={t('analytics.modelRank')} subtitle={t('analytics.clickRow')} class="span-2">
        <DataTable
          label={t('analytics.modelRank')}
          rows={rows}
          rowKey={(row) => row.model}
          onOpen={(row) => onSelect(row.model)}
          selectedKey={selected ?? undefined}
          csvName="models.csv"
          initialSort={{ key: 'calls', descending: true }}
          testId="model-table"
          columns={[...modelColumns(f), { key: 'share', header: t('col.share'), numeric: true, cell: (row) => f.percent(row.calls / total), csv: (row) => row.calls / total }]}
        />
      </Card>
      <Card title={t('analytics.costShare')}>
        <ShareList rows={costRows} label={(row) => row.model} value={(row) => row.cost ?? 0} format={(row) => f.money(row.cost)} />
      </Card>
      {selected && (
        <Card title={t('analytics.modelDetail', { model: selected })} class="span-full">
          {detail ? (
            <div class="stack">
              {detail.summary && <SummaryStats summary={detail.summary} unpriced={detail.unpriced_models} />}
              <TrendChart points={detail.timeline ?? []} granularity={scope.granularity} metric="cost" />
              <DataTable
                label={t('analytics.keysOfModel')}
                rows={detail.api_key_stats ?? []}
                rowKey={(row) => row.id}
                csvName={`keys-of-${selected}.csv`}
                columns={[
                  { key: 'key', header: t('col.apiKey'), cell: (row) => keyLabel(row.api_key_hash || row.id, aliases), csv: (row) => keyLabel(row.api_key_hash || row.id, aliases) },
                  { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls },
                  { key: 'cost', header: t('col.cost'), numeric: true, cell: (row) => f.money(row.cost), csv: (row) => row.cost },
                  { key: 'latency', header: t('col.latency'), numeric: true, cell: (row) => f.duration(row.average_latency_ms), csv: (row) => row.average_latency_ms },
                ]}
              />
            </div>
          ) : (
            <Empty>{t('common.loading')}</Empty>
          )}
        </Card>
      )}
    </div>
  );
}

function groupColumns(f: ReturnType<typeof fmt>, name: (row: GroupStat) => string, nameHeader: string) {
  return [
    { key: 'name', header: nameHeader, cell: name, csv: name, sort: name },
    { key: 'calls', header: t('col.calls'), numeric: true, cell: (row: GroupStat) => f.int(row.calls), csv: (row: GroupStat) => row.calls, sort: (row: GroupStat) => row.calls },
    { key: 'failures', header: t('col.failures'), numeric: true, cell: (row: GroupStat) => f.int(row.failure_calls), csv: (row: GroupStat) => row.failure_calls, sort: (row: GroupStat) => row.failure_calls },
    { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (row: GroupStat) => f.compact(row.total_tokens), csv: (row: GroupStat) => row.total_tokens, sort: (row: GroupStat) => row.total_tokens },
    { key: 'cost', header: t('col.cost'), numeric: true, cell: (row: GroupStat) => f.money(row.cost), csv: (row: GroupStat) => row.cost, sort: (row: GroupStat) => row.cost ?? -1 },
    { key: 'latency', header: t('col.latency'), numeric: true, cell: (row: GroupStat) => f.duration(row.average_latency_ms), csv: (row: GroupStat) => row.average_latency_ms, sort: (row: GroupStat) => row.average_latency_ms ?? -1 },
    { key: 'last', header: t('col.lastSeen'), cell: (row: GroupStat) => f.dateTime(row.last_seen_ms), csv: (row: GroupStat) => new Date(row.last_seen_ms).toISOString(), sort: (row: GroupStat) => row.last_seen_ms },
  ];
}

/** Rows whose failure rate or cost stands out from the rest of the table. */
function alertsOf(rows: GroupStat[]): { row: GroupStat; kind: 'failures' | 'cost' }[] {
  const totalCost = rows.reduce((sum, row) => sum + (row.cost ?? 0), 0);
  const alerts: { row: GroupStat; kind: 'failures' | 'cost' }[] = [];
  for (const row of rows) {
    if (row.calls >= 10 && row.failure_calls / row.calls >= 0.2) alerts.push({ row, kind: 'failures' });
    if (rows.length > 2 && totalCost > 0 && (row.cost ?? 0) / totalCost >= 0.5) alerts.push({ row, kind: 'cost' });
  }
  return alerts;
}

function Alerts({ rows, name }: { rows: GroupStat[]; name: (row: GroupStat) => string }) {
  const f = fmt();
  const alerts = alertsOf(rows);
  if (alerts.length === 0) return <Empty>{t('analytics.noAlerts')}</Empty>;
  return (
    <ul class="anomaly-list">
      {alerts.map(({ row, kind }) => (
        <li key={`${row.id}-${kind}`}>
          <Badge tone={kind === 'failures' ? 'bad' : 'warn'}>{t(`analytics.alert.${kind}`)}</Badge>
          <span>{name(row)}</span>
          <span class="muted">{kind === 'failures' ? f.percent(row.failure_calls / row.calls) : f.money(row.cost)}</span>
        </li>
      ))}
    </ul>
  );
}

function Keys({ rows, scope, selected, onSelect, detail }: { rows: GroupStat[]; scope: Scope; selected: string | null; onSelect: (hash: string) => void; detail?: AnalyticsResponse }) {
  const f = fmt();
  const aliases = useAliases();
  const name = (row: GroupStat) => keyLabel(row.api_key_hash || row.id, aliases);
  const chosen = rows.find((row) => row.api_key_hash === selected);
  return (
    <div class="grid">
      <Card title={t('analytics.keyRank')} subtitle={t('analytics.clickRow')} class="span-2">
        <DataTable label={t('analytics.keyRank')} rows={rows} rowKey={(row) => row.id} onOpen={(row) => row.api_key_hash && onSelect(row.api_key_hash)} selectedKey={chosen?.id} csvName="api-keys.csv" initialSort={{ key: 'calls', descending: true }} columns={groupColumns(f, name, t('col.apiKey'))} />
      </Card>
      <Card title={t('analytics.alerts')}>
        <Alerts rows={rows} name={name} />
      </Card>
      {selected && (
        <Card title={t('analytics.keyDetail', { key: keyLabel(selected, aliases) })} class="span-full">
          {detail ? (
            <div class="stack">
              <TrendChart points={detail.timeline ?? []} granularity={scope.granularity} metric="cost" />
              <DataTable label={t('analytics.modelsOfKey')} rows={detail.model_stats ?? []} rowKey={(row) => row.model} csvName="models-of-key.csv" columns={modelColumns(f)} />
              {chosen?.contexts && chosen.contexts.length > 0 && (
                <DataTable
                  label={t('analytics.contexts')}
                  rows={chosen.contexts}
                  rowKey={(row) => row.id}
                  csvName="key-contexts.csv"
                  columns={[
                    { key: 'context', header: t('col.account'), cell: (row) => identityLabel(row), csv: (row) => identityLabel(row) },
                    { key: 'provider', header: t('col.provider'), cell: (row) => row.auth_provider_snapshot || '—', csv: (row) => row.auth_provider_snapshot },
                    { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls },
                    { key: 'cost', header: t('col.cost'), numeric: true, cell: (row) => f.money(row.cost), csv: (row) => row.cost },
                  ]}
                />
              )}
            </div>
          ) : (
            <Empty>{t('common.loading')}</Empty>
          )}
        </Card>
      )}
    </div>
  );
}

function Credentials({ rows, scope, selected, onSelect, detail }: { rows: GroupStat[]; scope: Scope; selected: string | null; onSelect: (id: string) => void; detail?: AnalyticsResponse }) {
  const f = fmt();
  const language = useLanguage();
  const name = (row: GroupStat) => `${identityLabel(row)}${row.auth_provider_snapshot ? ` · ${row.auth_provider_snapshot}` : ''}`;
  const points = detail?.credential_timeline ?? [];
  const x = useMemo(() => points.map((point) => point.bucket_ms), [points]);
  const series = useMemo<SeriesSpec[]>(
    () => [
      { label: t('summary.calls'), kind: 'bars', color: 'c2', values: points.map((point) => point.calls) },
      { label: t('dashboard.failures'), kind: 'line', color: 'bad', values: points.map((point) => point.failure) },
      { label: t('summary.cost'), kind: 'line', scale: 'y2', color: 'c3', values: points.map((point) => point.cost), format: (value) => f.money(value) },
    ],
    [points, language],
  );
  return (
    <div class="grid">
      <Card title={t('analytics.credentialRank')} subtitle={t('analytics.clickRow')} class="span-2">
        <DataTable label={t('analytics.credentialRank')} rows={rows} rowKey={(row) => row.id} onOpen={(row) => onSelect(row.id)} selectedKey={selected ?? undefined} csvName="credentials.csv" initialSort={{ key: 'cost', descending: true }} columns={groupColumns(f, name, t('col.credential'))} />
      </Card>
      <Card title={t('analytics.alerts')}>
        <Alerts rows={rows} name={name} />
      </Card>
      {selected && (
        <Card title={t('analytics.credentialDetail', { name: name(rows.find((row) => row.id === selected) ?? ({ id: selected } as GroupStat)) })} class="span-full">
          {detail ? points.length ? <TimeChart x={x} series={series} granularity={scope.granularity} label={t('analytics.credentialDetail', { name: selected })} /> : <Empty /> : <Empty>{t('common.loading')}</Empty>}
        </Card>
      )}
    </div>
  );
}

type HeatMetric = 'calls' | 'tokens' | 'cost' | 'failure_rate';
type HeatScale = 'absolute' | 'weekday' | 'hour';

function metricOf(cell: HeatmapCell, metric: HeatMetric): number {
  return metric === 'cost' ? cell.cost ?? 0 : cell[metric];
}

function Heatmap({ cells, scope, filters }: { cells: HeatmapCell[]; scope: Scope; filters: FilterState }) {
  const f = fmt();
  const timeZone = activeTimeZone();
  const [metric, setMetric] = useState<HeatMetric>('calls');
  const [scaling, setScaling] = useState<HeatScale>('absolute');
  const [chosen, setChosen] = useState<HeatmapCell | null>(null);
  const [day, setDay] = useState<string>('');
  const days = useMemo(() => {
    const list: number[] = [];
    if (scope.range.toMs - scope.range.fromMs > 32 * DAY_MS) return list;
    for (let start = startOfDay(scope.range.fromMs, timeZone); start < scope.range.toMs; start = addDays(start, 1, timeZone)) list.push(start);
    return list;
  }, [scope, timeZone]);
  const dayResource = useResource(day ? `heat-day:${day}:${JSON.stringify(filters)}` : null, (signal) => {
    const from = Number(day);
    return api.analytics(analyticsBody({ fromMs: from, toMs: addDays(from, 1, timeZone) }, Date.now(), timeZone, filters, { granularity: 'hour', heatmap: true }), signal);
  });
  const shown = day ? dayResource.data?.heatmap ?? [] : cells;
  const grid = new Map(shown.map((cell) => [`${cell.weekday}:${cell.hour}`, cell]));
  const max = (select: (cell: HeatmapCell) => boolean) => Math.max(0, ...shown.filter(select).map((cell) => metricOf(cell, metric)));
  const globalMax = max(() => true);
  const weekdayNames = [0, 1, 2, 3, 4, 5, 6].map((weekday) => new Intl.DateTimeFormat(f.locale, { weekday: 'short', timeZone: 'UTC' }).format(Date.UTC(2023, 0, 1 + weekday)));
  const format = (value: number) => (metric === 'cost' ? f.money(value) : metric === 'failure_rate' ? f.percent(value) : f.compact(value));
  const focus = {
    requests: [...shown].sort((left, right) => right.calls - left.calls).slice(0, 3),
    cost: shown.filter((cell) => (cell.cost ?? 0) > 0).sort((left, right) => (right.cost ?? 0) - (left.cost ?? 0)).slice(0, 3),
    risk: shown.filter((cell) => cell.calls >= 10 && cell.failure_rate > 0).sort((left, right) => right.failure_rate - left.failure_rate).slice(0, 3),
  };
  const cellName = (cell: HeatmapCell) => `${weekdayNames[cell.weekday]} ${String(cell.hour).padStart(2, '0')}:00`;

  const csv = () =>
    saveCsv(
      toCsv(shown, [
        { header: 'weekday', value: (cell) => cell.weekday },
        { header: 'hour', value: (cell) => cell.hour },
        { header: 'calls', value: (cell) => cell.calls },
        { header: 'failure', value: (cell) => cell.failure },
        { header: 'tokens', value: (cell) => cell.tokens },
        { header: 'cost_usd', value: (cell) => cell.cost },
        { header: 'failure_rate', value: (cell) => cell.failure_rate },
      ]),
      'heatmap.csv',
    );

  return (
    <div class="grid">
      <Card title={t('analytics.heatmap')} class="span-2" actions={shown.length > 0 && <button type="button" class="button small" onClick={csv}>{t('common.downloadCsv')}</button>}>
        <div class="toolbar">
          <Segmented<HeatMetric>
            label={t('analytics.heatMetric')}
            value={metric}
            onChange={setMetric}
            choices={[
              { value: 'calls', label: t('summary.calls') },
              { value: 'tokens', label: t('summary.tokens') },
              { value: 'cost', label: t('summary.cost') },
              { value: 'failure_rate', label: t('analytics.failureRate') },
            ]}
          />
          <Segmented<HeatScale>
            label={t('analytics.heatScale')}
            value={scaling}
            onChange={setScaling}
            choices={[
              { value: 'absolute', label: t('analytics.scaleAbsolute') },
              { value: 'weekday', label: t('analytics.scaleWeekday') },
              { value: 'hour', label: t('analytics.scaleHour') },
            ]}
          />
          {days.length > 0 && (
            <label class="field">
              <span>{t('analytics.heatDay')}</span>
              <select value={day} onChange={(event) => setDay(event.currentTarget.value)}>
                <option value="">{t('analytics.heatAllDays')}</option>
                {days.map((start) => (
                  <option value={String(start)} key={start}>
                    {f.day(start)}
                  </option>
                ))}
              </select>
            </label>
          )}
        </div>
        <div class="heatmap-scroll">
          <div class="heatmap" role="grid" aria-label={t('analytics.heatmap')} data-testid="heatmap">
            <div class="heat-corner" />
            {Array.from({ length: 24 }, (_, hour) => (
              <div class="heat-hour" key={hour} aria-hidden="true">
                {hour % 3 === 0 ? hour : ''}
              </div>
            ))}
            {weekdayNames.map((name, weekday) => (
              <div class="heat-row" role="row" key={name}>
                <div class="heat-day" role="rowheader">
                  {name}
                </div>
                {Array.from({ length: 24 }, (_, hour) => {
                  const cell = grid.get(`${weekday}:${hour}`);
                  const value = cell ? metricOf(cell, metric) : 0;
                  const scaleMax = scaling === 'weekday' ? max((other) => other.weekday === weekday) : scaling === 'hour' ? max((other) => other.hour === hour) : globalMax;
                  const level = scaleMax > 0 ? value / scaleMax : 0;
                  return (
                    <button
                      type="button"
                      role="gridcell"
                      key={hour}
                      class={`heat-cell ${chosen && cell && chosen.weekday === weekday && chosen.hour === hour ? 'selected' : ''}`}
                      style={{ opacity: String(cell ? 0.15 + level * 0.85 : 0.06) }}
                      aria-label={`${name} ${hour}:00 ${format(value)}`}
                      onClick={() => cell && setChosen(cell)}
                      disabled={!cell}
                    />
                  );
                })}
              </div>
            ))}
          </div>
        </div>
      </Card>
      <Card title={chosen ? cellName(chosen) : t('analytics.heatFocus')}>
        {chosen ? (
          <div class="stack">
            <dl class="detail-list">
              <dt>{t('summary.calls')}</dt>
              <dd>{f.int(chosen.calls)}</dd>
              <dt>{t('summary.tokens')}</dt>
              <dd>{f.compact(chosen.tokens)}</dd>
              <dt>{t('summary.cost')}</dt>
              <dd>{f.money(chosen.cost)}</dd>
              <dt>{t('analytics.failureRate')}</dt>
              <dd>{f.percent(chosen.failure_rate)}</dd>
              <dt>{t('analytics.vsAverage')}</dt>
              <dd>{f.percent(shown.length ? chosen.calls / (shown.reduce((sum, cell) => sum + cell.calls, 0) / shown.length) : 0)}</dd>
            </dl>
            {(['model_contributors', 'api_key_contributors', 'provider_contributors'] as const).map((field) => (
              <div key={field}>
                <h3 class="small-heading">{t(`analytics.${field}`)}</h3>
                <ul class="plain-list">
                  {(chosen[field] ?? []).map((item) => (
                    <li key={item.key}>
                      {item.label || item.key} · {f.int(item.calls)} ({f.percent(item.share)})
                    </li>
                  ))}
                </ul>
              </div>
            ))}
            <button type="button" class="link-button" onClick={() => setChosen(null)}>
              {t('analytics.heatFocus')}
            </button>
          </div>
        ) : (
          <div class="stack">
            {(['requests', 'cost', 'risk'] as const).map((kind) => (
              <div key={kind}>
                <h3 class="small-heading">{t(`analytics.focus.${kind}`)}</h3>
                {focus[kind].length ? (
                  <ul class="plain-list">
                    {focus[kind].map((cell) => (
                      <li key={`${cell.weekday}:${cell.hour}`}>
                        <button type="button" class="link-button" onClick={() => setChosen(cell)}>
                          {cellName(cell)}
                        </button>{' '}
                        {kind === 'cost' ? f.money(cell.cost) : kind === 'risk' ? f.percent(cell.failure_rate) : f.int(cell.calls)}
                      </li>
                    ))}
                  </ul>
                ) : (
                  <p class="muted small">{t('common.noData')}</p>
                )}
              </div>
            ))}
          </div>
        )}
      </Card>
    </div>
  );
}
