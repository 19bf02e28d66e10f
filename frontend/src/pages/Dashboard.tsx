// Today at a glance: calls, success, tokens, cost, latency, RPM/TPM, the 24-hour chart,
// the request-health strip, token mix, top models and keys, channel health, recent
// failures and the collector. Every card loads on its own, so one failure stays local.
import { useEffect, useMemo } from 'preact/hooks';

import { useAliases } from '../lib/aliases';
import { api } from '../lib/endpoints';
import { fmt } from '../lib/format';
import { t } from '../lib/i18n';
import { identityLabel, keyLabel } from '../lib/labels';
import { useResource } from '../lib/resource';
import { navigate } from '../lib/router';
import { activeTimeZone, settings } from '../lib/settings';
import { startOfDay } from '../lib/time';
import type { DashboardSummary, GroupStat, StatusResponse } from '../lib/types';
import { TimeChart, type SeriesSpec } from '../components/Chart';
import { DataTable } from '../components/Table';
import { Badge, Card, Empty, ShareBar, Stat } from '../components/ui';
import { CollectorFacts } from './System';

const REFRESH_MS = 60_000;

let firstPaintMarked = false;

/** Marks the first frame that shows dashboard numbers (read by the end-to-end test). */
function markFirstPaint() {
  if (firstPaintMarked) return;
  firstPaintMarked = true;
  requestAnimationFrame(() => performance.mark('cpamp:dashboard-painted'));
}

export function DashboardPage() {
  const timeZone = activeTimeZone();
  const summary = useResource(
    `dashboard:${timeZone}`,
    (signal) => {
      const now = Date.now();
      return api.dashboard(startOfDay(now, timeZone), now, signal);
    },
    { refreshMs: REFRESH_MS },
  );
  const status = useResource('status', (signal) => api.status(signal), { refreshMs: REFRESH_MS });
  const keys = useResource(
    `dashboard-keys:${timeZone}`,
    (signal) => {
      const now = Date.now();
      return api.analytics(
        { from_ms: startOfDay(now, timeZone), to_ms: now + 1, now_ms: now, time_zone: timeZone, include: { api_key_stats: true } },
        signal,
      );
    },
    { refreshMs: REFRESH_MS },
  );

  useEffect(() => {
    if (summary.data) markFirstPaint();
  }, [summary.data]);

  const data = summary.data;
  return (
    <div class="page dashboard" data-testid="page-dashboard">
      <Card title={t('dashboard.today')} resource={summary} class="span-full" id="card-today">
        {data && <TodayStats data={data} />}
      </Card>
      <Card title={t('dashboard.traffic')} subtitle={t('dashboard.trafficHint')} resource={summary} class="span-2">
        {data && <TrafficCard data={data} />}
      </Card>
      <Card title={t('dashboard.collector')} resource={status} id="card-collector">
        {status.data && <CollectorCard status={status.data} />}
      </Card>
      <Card title={t('dashboard.topModels')} resource={summary}>
        {data && <TopModels data={data} />}
      </Card>
      <Card title={t('dashboard.costRank')} resource={summary}>
        {data && <CostRank data={data} />}
      </Card>
      <Card title={t('dashboard.topKeys')} resource={keys} id="card-keys">
        {keys.data && <TopKeys rows={keys.data.api_key_stats ?? []} />}
      </Card>
      <Card title={t('dashboard.channels')} resource={summary} class="span-2">
        {data && <Channels data={data} />}
      </Card>
      <Card title={t('dashboard.recentFailures')} resource={summary}>
        {data && <RecentFailures data={data} />}
      </Card>
    </div>
  );
}

function TodayStats({ data }: { data: DashboardSummary }) {
  const f = fmt();
  const today = data.today;
  const tone = today.total_calls === 0 ? undefined : today.success_rate >= 0.95 ? 'good' : today.success_rate >= 0.85 ? 'warn' : 'bad';
  return (
    <div class="stats-grid">
      <Stat label={t('dashboard.calls')} value={f.int(today.total_calls)} hint={t('dashboard.failuresCount', { count: f.int(today.failure_calls) })} testId="kpi-calls" />
      <Stat label={t('dashboard.successRate')} value={today.total_calls ? f.percent(today.success_rate) : '—'} tone={tone} testId="kpi-success" />
      <Stat label={t('dashboard.tokens')} value={f.compact(today.total_tokens)} hint={t('dashboard.tokensHint', { input: f.compact(today.input_tokens), output: f.compact(today.output_tokens) })} testId="kpi-tokens" />
      <Stat
        label={t('dashboard.cost')}
        value={f.money(today.total_cost)}
        hint={data.unpriced_models?.length ? t('summary.unpriced', { models: data.unpriced_models.slice(0, 3).join(', ') }) : undefined}
        tone={data.unpriced_models?.length ? 'warn' : undefined}
        testId="kpi-cost"
      />
      <Stat label={t('dashboard.latency')} value={f.duration(today.average_latency_ms)} testId="kpi-latency" />
      <Stat label={t('dashboard.rpm')} value={f.compact(Math.round(data.rolling_30m.rpm * 10) / 10)} hint={t('dashboard.rolling')} testId="kpi-rpm" />
      <Stat label={t('dashboard.tpm')} value={f.compact(Math.round(data.rolling_30m.tpm))} hint={t('dashboard.rolling')} testId="kpi-tpm" />
    </div>
  );
}

function TrafficCard({ data }: { data: DashboardSummary }) {
  const f = fmt();
  const language = settings.get().language;
  const timeline = data.traffic_timeline ?? [];
  const x = useMemo(() => timeline.map((point) => point.bucket_ms), [data]);
  const series = useMemo<SeriesSpec[]>(
    () => [
      { label: t('dashboard.tokens'), kind: 'bars', color: 'c1', values: timeline.map((point) => point.tokens), format: (value) => f.compact(value) },
      { label: t('dashboard.calls'), kind: 'line', scale: 'y2', color: 'c2', values: timeline.map((point) => point.calls) },
      { label: t('dashboard.failures'), kind: 'line', scale: 'y2', color: 'bad', values: timeline.map((point) => point.failure) },
    ],
    [data, language],
  );
  const health = data.today_request_health_timeline;
  const mix = data.token_mix ?? [];
  return (
    <div class="stack">
      <TimeChart x={x} series={series} granularity="hour" xRange={x.length ? [x[0]!, x[x.length - 1]! + 3_600_000] : undefined} label={t('dashboard.trafficChart')} testId="traffic-chart" />
      {health && (
        <div>
          <div class="strip-header">
            <span>{t('dashboard.health')}</span>
            <span class="muted">{t('dashboard.healthSummary', { rate: health.total_calls ? f.percent(health.success_rate) : '—', calls: f.int(health.total_calls) })}</span>
          </div>
          <div class="health-strip" role="img" aria-label={t('dashboard.healthAria')} data-testid="health-strip">
            {health.points.map((point) => (
              <span
                key={point.bucket_ms}
                class={`health-cell tone-${point.tone}`}
                title={`${f.hour(point.bucket_ms)} · ${t('dashboard.calls')}: ${f.int(point.calls)} · ${t('dashboard.failures')}: ${f.int(point.failure)}`}
              />
            ))}
          </div>
          <div class="legend-row" aria-hidden="true">
            {(['good', 'warn', 'bad', 'empty', 'future'] as const).map((tone) => (
              <span key={tone} class="legend-item">
                <span class={`health-cell tone-${tone}`} /> {t(`tone.${tone}`)}
              </span>
            ))}
          </div>
        </div>
      )}
      {mix.length > 0 && (
        <div>
          <div class="strip-header">
            <span>{t('dashboard.tokenMix')}</span>
          </div>
          <div class="mix-bar" role="img" aria-label={mix.map((part) => `${t(`mix.${part.key}`)} ${f.percent(part.share)}`).join(', ')}>
            {mix.map((part) => (
              <span key={part.key} class={`mix-part mix-${part.key}`} style={{ width: `${part.share * 100}%` }} />
            ))}
          </div>
          <div class="legend-row">
            {mix.map((part) => (
              <span key={part.key} class="legend-item">
                <span class={`swatch mix-${part.key}`} aria-hidden="true" /> {t(`mix.${part.key}`)} {f.compact(part.tokens)} ({f.percent(part.share)})
              </span>
            ))}
          </div>
        </div>
      )}
    </div>
  );
}

function CollectorCard({ status }: { status: StatusResponse }) {
  return (
    <div class="stack">
      <CollectorFacts status={status} compact />
      <a class="link" href="#/system">
        {t('dashboard.openSystem')}
      </a>
    </div>
  );
}

function TopModels({ data }: { data: DashboardSummary }) {
  const f = fmt();
  return (
    <DataTable
      label={t('dashboard.topModels')}
      rows={data.top_models_today}
      rowKey={(row) => row.model}
      csvName="top-models-today.csv"
      empty={t('dashboard.noCallsToday')}
      columns={[
        { key: 'model', header: t('col.model'), cell: (row) => row.model || '—', csv: (row) => row.model },
        { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls },
        { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (row) => f.compact(row.tokens), csv: (row) => row.tokens },
        { key: 'cost', header: t('col.cost'), numeric: true, cell: (row) => f.money(row.cost), csv: (row) => row.cost },
        { key: 'success', header: t('col.successRate'), numeric: true, cell: (row) => f.percent(row.success_rate), csv: (row) => row.success_rate },
      ]}
    />
  );
}

function CostRank({ data }: { data: DashboardSummary }) {
  const f = fmt();
  const rows = data.model_cost_rank ?? [];
  if (rows.length === 0) return <Empty>{t('dashboard.noCallsToday')}</Empty>;
  return (
    <ul class="rank-list">
      {rows.map((row) => (
        <li key={row.model}>
          <div class="rank-line">
            <span class="rank-name">{row.model || '—'}</span>
            <span class="rank-value">{f.money(row.cost)}</span>
          </div>
          <ShareBar share={row.cost_share} />
        </li>
      ))}
    </ul>
  );
}

function TopKeys({ rows }: { rows: GroupStat[] }) {
  const f = fmt();
  const aliases = useAliases();
  const top = useMemo(() => [...rows].sort((left, right) => right.calls - left.calls).slice(0, 5), [rows]);
  const max = Math.max(1, ...top.map((row) => row.calls));
  if (top.length === 0) return <Empty>{t('dashboard.noCallsToday')}</Empty>;
  return (
    <ul class="rank-list">
      {top.map((row) => (
        <li key={row.id}>
          <div class="rank-line">
            <span class="rank-name">{keyLabel(row.api_key_hash || row.id, aliases)}</span>
            <span class="rank-value">
              {f.int(row.calls)} · {f.money(row.cost)}
            </span>
          </div>
          <ShareBar share={row.calls / max} />
        </li>
      ))}
    </ul>
  );
}

function Channels({ data }: { data: DashboardSummary }) {
  const f = fmt();
  return (
    <DataTable
      label={t('dashboard.channels')}
      rows={data.channel_health ?? []}
      rowKey={(row) => row.auth_index}
      csvName="channel-health.csv"
      empty={t('dashboard.noCallsToday')}
      columns={[
        { key: 'channel', header: t('col.channel'), cell: (row) => identityLabel(row), csv: (row) => identityLabel(row) },
        { key: 'provider', header: t('col.provider'), cell: (row) => row.auth_provider_snapshot || '—', csv: (row) => row.auth_provider_snapshot },
        { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls },
        { key: 'failures', header: t('col.failures'), numeric: true, cell: (row) => f.int(row.failures), csv: (row) => row.failures },
        { key: 'success', header: t('col.successRate'), numeric: true, cell: (row) => f.percent(row.success_rate), csv: (row) => row.success_rate },
        { key: 'latency', header: t('col.latency'), numeric: true, cell: (row) => f.duration(row.average_latency_ms), csv: (row) => row.average_latency_ms },
        { key: 'cost', header: t('col.cost'), numeric: true, cell: (row) => f.money(row.cost), csv: (row) => row.cost },
        { key: 'tone', header: t('col.health'), cell: (row) => <Badge tone={row.tone}>{t(`tone.${row.tone}`)}</Badge>, csv: (row) => row.tone },
      ]}
    />
  );
}

function RecentFailures({ data }: { data: DashboardSummary }) {
  const f = fmt();
  const aliases = useAliases();
  if (data.recent_failures.length === 0) return <Empty>{t('dashboard.noFailures')}</Empty>;
  return (
    <div class="stack">
      <ul class="failure-list" data-testid="recent-failures">
        {data.recent_failures.map((failure, index) => (
          <li key={`${failure.timestamp_ms}-${index}`}>
            <div class="failure-head">
              <Badge tone="bad">{failure.fail_status_code ?? t('status.failed')}</Badge>
              <span class="failure-model">{failure.model || '—'}</span>
              <span class="muted">{f.time(failure.timestamp_ms)}</span>
            </div>
            <div class="muted small">
              {identityLabel(failure)} · {keyLabel(failure.api_key_hash, aliases)}
              {failure.header_error_kind ? ` · ${failure.header_error_kind}` : ''}
            </div>
            {failure.fail_summary && <div class="failure-summary">{failure.fail_summary}</div>}
          </li>
        ))}
      </ul>
      <button type="button" class="link-button" onClick={() => navigate('/monitoring', { status: 'failure', tab: 'realtime' })}>
        {t('dashboard.allFailures')}
      </button>
    </div>
  );
}
