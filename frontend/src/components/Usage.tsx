// Pieces shared by the Request Monitor and Usage Analytics: summary figures, the event
// table and the request detail drawer.
import type { ComponentChildren } from 'preact';

import { useAliases } from '../lib/aliases';
import { api } from '../lib/endpoints';
import { statusOf } from '../lib/events';
import { DASH, fmt } from '../lib/format';
import { t, tMaybe } from '../lib/i18n';
import { firstNonBlank, identityLabel, keyLabel } from '../lib/labels';
import { useResource } from '../lib/resource';
import type { CostExplanation, Summary, SummaryComparison, UsageEvent } from '../lib/types';
import { DataTable } from './Table';
import { Badge, Card, Dialog, Stat } from './ui';

/**
 * A notice when the collector is not collecting (monitoring switched off or no CPA
 * connection), so an empty page is not mistaken for "no traffic".
 */
export function CollectionBanner() {
  const status = useResource('collection-state', (signal) => api.status(signal));
  const collector = status.data?.collector;
  if (!collector || (collector.collector !== 'stopped' && collector.collector !== 'error')) return null;
  return (
    <div class="banner warn span-full" role="status" data-testid="collection-banner">
      {collector.collector === 'stopped' ? t('monitor.collectionStopped') : t('monitor.collectionError', { error: collector.lastError ?? '' })}{' '}
      <a href="#/system">{t('monitor.openSystem')}</a>
    </div>
  );
}

export function SummaryStats({ summary, comparison, unpriced = [] }: { summary: Summary; comparison?: SummaryComparison; unpriced?: string[] }) {
  const f = fmt();
  const change = (current: number, previous: number | null | undefined) => {
    if (previous === null || previous === undefined) return undefined;
    if (previous === 0) return current > 0 ? t('summary.newInPeriod') : undefined;
    const ratio = (current - previous) / previous;
    return t('summary.vsPrevious', { change: `${ratio >= 0 ? '+' : ''}${f.percent(ratio)}` });
  };
  return (
    <div class="stats-grid" data-testid="summary-stats">
      <Stat label={t('summary.calls')} value={f.int(summary.total_calls)} hint={change(summary.total_calls, comparison?.total_calls)} testId="summary-calls" />
      <Stat
        label={t('summary.successRate')}
        value={summary.total_calls ? f.percent(summary.success_rate) : DASH}
        hint={t('summary.failures', { count: f.int(summary.failure_calls) })}
        tone={summary.total_calls === 0 ? undefined : summary.success_rate >= 0.95 ? 'good' : summary.success_rate >= 0.85 ? 'warn' : 'bad'}
        testId="summary-success"
      />
      <Stat label={t('summary.tokens')} value={f.compact(summary.total_tokens)} hint={change(summary.total_tokens, comparison?.total_tokens)} testId="summary-tokens" />
      <Stat
        label={t('summary.cost')}
        value={f.money(summary.total_cost)}
        hint={unpriced.length ? t('summary.unpriced', { models: unpriced.slice(0, 3).join(', ') }) : change(summary.total_cost ?? 0, comparison?.total_cost)}
        tone={unpriced.length ? 'warn' : undefined}
        testId="summary-cost"
      />
      <Stat
        label={t('summary.latency')}
        value={f.duration(summary.average_latency_ms)}
        hint={summary.p95_latency_ms !== null && summary.p95_latency_ms !== undefined ? t('summary.p95', { value: f.duration(summary.p95_latency_ms) }) : undefined}
        testId="summary-latency"
      />
      <Stat label={t('summary.input')} value={f.compact(summary.input_tokens)} testId="summary-input" />
      <Stat label={t('summary.output')} value={f.compact(summary.output_tokens)} testId="summary-output" />
      <Stat
        label={t('summary.cached')}
        value={f.compact(summary.cached_tokens + summary.cache_read_tokens)}
        hint={t('summary.hitRate', { rate: f.percent(summary.cache_hit_rate) })}
        testId="summary-cached"
      />
      <Stat label={t('summary.reasoning')} value={f.compact(summary.reasoning_tokens)} testId="summary-reasoning" />
    </div>
  );
}

/** The newest-first event list; a row opens the detail drawer. */
export function EventTable({
  events,
  onOpen,
  label,
  csvName,
}: {
  events: readonly UsageEvent[];
  onOpen: (event: UsageEvent) => void;
  label: string;
  csvName?: string;
}) {
  const f = fmt();
  const aliases = useAliases();
  return (
    <DataTable
      label={label}
      rows={events}
      rowKey={(event) => event.event_hash}
      onOpen={onOpen}
      csvName={csvName}
      testId="event-table"
      empty={t('monitor.noEvents')}
      columns={[
        { key: 'time', header: t('col.time'), cell: (event) => f.dateTime(event.timestamp_ms), csv: (event) => new Date(event.timestamp_ms).toISOString() },
        { key: 'model', header: t('col.model'), cell: (event) => event.analytics_model || event.model, csv: (event) => event.analytics_model || event.model },
        { key: 'key', header: t('col.apiKey'), cell: (event) => keyLabel(event.api_key_hash, aliases), csv: (event) => keyLabel(event.api_key_hash, aliases) },
        { key: 'account', header: t('col.account'), cell: (event) => identityLabel(event), csv: (event) => identityLabel(event) },
        {
          key: 'status',
          header: t('col.status'),
          cell: (event) => <Badge tone={event.failed ? 'bad' : 'good'}>{statusOf(event) === 'ok' ? t('status.ok') : statusOf(event) === 'failed' ? t('status.failed') : statusOf(event)}</Badge>,
          csv: (event) => statusOf(event),
        },
        {
          key: 'latency',
          header: t('col.latency'),
          numeric: true,
          cell: (event) => (
            <span>
              {f.duration(event.latency_ms)}
              {event.ttft_ms ? <span class="muted small"> / {f.duration(event.ttft_ms)}</span> : null}
            </span>
          ),
          csv: (event) => event.latency_ms,
        },
        { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (event) => f.compact(event.total_tokens), csv: (event) => event.total_tokens },
      ]}
    />
  );
}

function Row({ label, value, mono }: { label: string; value: ComponentChildren; mono?: boolean }) {
  if (value === undefined || value === null || value === '') return null;
  return (
    <>
      <dt>{label}</dt>
      <dd class={mono ? 'mono' : ''}>{value}</dd>
    </>
  );
}

/** Everything stored about one request, with the redacted failure summary and header metadata. */
export function EventDetail({ event, onClose }: { event: UsageEvent; onClose: () => void }) {
  const f = fmt();
  const aliases = useAliases();
  const quota = event.header_quota_used_percent !== null && event.header_quota_used_percent !== undefined;
  return (
    <Dialog title={t('detail.title')} onClose={onClose} kind="drawer" testId="event-detail">
      <dl class="detail-list">
        <Row label={t('detail.time')} value={f.dateTime(event.timestamp_ms)} />
        <Row label={t('col.status')} value={<Badge tone={event.failed ? 'bad' : 'good'}>{event.failed ? t('status.failed') : t('status.ok')}{event.failed && event.fail_status_code ? ` · ${event.fail_status_code}` : ''}</Badge>} />
        <Row label={t('detail.requestId')} value={event.request_id} mono />
        <Row label={t('detail.endpoint')} value={event.endpoint} mono />
        <Row label={t('col.latency')} value={f.duration(event.latency_ms)} />
        <Row label={t('detail.ttft')} value={event.ttft_ms ? f.duration(event.ttft_ms) : undefined} />
      </dl>
      {event.failed && (
        <section class="detail-section">
          <h3>{t('detail.failure')}</h3>
          <p class="muted small">{t('detail.redactedNote')}</p>
          <pre class="fail-summary" data-testid="fail-summary">
            {event.fail_summary || t('detail.noSummary')}
          </pre>
        </section>
      )}
      <section class="detail-section">
        <h3>{t('detail.model')}</h3>
        <dl class="detail-list">
          <Row label={t('detail.analyticsModel')} value={event.analytics_model} />
          <Row label={t('detail.requestedModel')} value={event.requested_model} />
          <Row label={t('detail.resolvedModel')} value={event.resolved_model} />
          <Row label={t('detail.storedModel')} value={event.model} />
          <Row label={t('detail.reasoningEffort')} value={event.reasoning_effort} />
          <Row label={t('detail.serviceTier')} value={event.service_tier} />
          <Row label={t('detail.executor')} value={event.executor_type} />
        </dl>
      </section>
      <section class="detail-section">
        <h3>{t('detail.identity')}</h3>
        <dl class="detail-list">
          <Row label={t('col.apiKey')} value={keyLabel(event.api_key_hash, aliases)} />
          <Row label={t('col.provider')} value={event.auth_provider_snapshot} />
          <Row label={t('col.account')} value={firstNonBlank(event.account_snapshot, event.auth_label_snapshot)} />
          <Row label={t('detail.authFile')} value={event.auth_file_snapshot} mono />
          <Row label={t('detail.authIndex')} value={event.auth_index} mono />
          <Row label={t('detail.project')} value={event.auth_project_id_snapshot} />
          <Row label={t('detail.source')} value={event.source} mono />
          <Row label={t('detail.clientIp')} value={event.client_ip} mono />
          <Row label={t('detail.forwardedFor')} value={event.x_forwarded_for} mono />
          <Row label={t('detail.userAgent')} value={event.user_agent} mono />
        </dl>
      </section>
      <section class="detail-section">
        <h3>{t('detail.tokens')}</h3>
        <dl class="detail-list">
          <Row label={t('summary.input')} value={f.int(event.input_tokens)} />
          <Row label={t('summary.output')} value={f.int(event.output_tokens)} />
          <Row label={t('detail.cachedCompat')} value={f.int(event.cached_tokens)} />
          <Row label={t('detail.cacheRead')} value={f.int(event.cache_read_tokens)} />
          <Row label={t('detail.cacheCreation')} value={f.int(event.cache_creation_tokens)} />
          <Row label={t('summary.reasoning')} value={f.int(event.reasoning_tokens)} />
          <Row label={t('detail.total')} value={f.int(event.total_tokens)} />
        </dl>
      </section>
      {(event.header_error_kind || event.header_error_code || event.header_trace_id || quota || event.header_quota_plan_type || event.response_metadata) && (
        <section class="detail-section" data-testid="header-metadata">
          <h3>{t('detail.headers')}</h3>
          <dl class="detail-list">
            <Row label={t('detail.errorKind')} value={event.header_error_kind} />
            <Row label={t('detail.errorCode')} value={event.header_error_code} mono />
            <Row label={t('detail.traceId')} value={event.header_trace_id} mono />
            <Row label={t('detail.quotaUsed')} value={quota ? `${event.header_quota_used_percent}%` : undefined} />
            <Row label={t('detail.quotaRecover')} value={event.header_quota_recover_at_ms ? f.dateTime(event.header_quota_recover_at_ms) : undefined} />
            <Row label={t('detail.plan')} value={event.header_quota_plan_type} />
          </dl>
          {event.response_metadata && <pre class="json">{JSON.stringify(event.response_metadata, null, 2)}</pre>}
        </section>
      )}
      <CostExplanation eventHash={event.event_hash} />
      <dl class="detail-list">
        <Row label={t('detail.eventHash')} value={event.event_hash} mono />
      </dl>
    </Dialog>
  );
}

function CostExplanation({ eventHash }: { eventHash: string }) {
  const explanation = useResource(`explain:${eventHash}`, (signal) => api.explainCost(eventHash, signal));
  return (
    <Card title={t('detail.cost')} resource={explanation} unavailableWhat={t('detail.costWhat')} class="flat">
      {explanation.data && <Explanation value={explanation.data} />}
    </Card>
  );
}

/** How one request's cost came about: the price found, the rule, and a line per token class. */
export function Explanation({ value }: { value: CostExplanation }) {
  const f = fmt();
  const price = value.price;
  return (
    <div class="stack" data-testid="cost-explanation">
      <dl class="detail-list">
        <dt>{t('explain.cost')}</dt>
        <dd data-testid="explained-cost">{f.money(value.cost)}</dd>
        <dt>{t('explain.billingModel')}</dt>
        <dd>{value.billing_model || DASH}</dd>
        {value.service_tier && (
          <>
            <dt>{t('detail.serviceTier')}</dt>
            <dd>{value.service_tier}</dd>
          </>
        )}
        {price && (
          <>
            <dt>{t('explain.price')}</dt>
            <dd>
              {price.key} <span class="muted small">({tMaybe(`explain.matched.${price.matched_by}`) ?? price.matched_by})</span>
            </dd>
            <dt>{t('explain.rule')}</dt>
            <dd>
              {tMaybe(`explain.rule.${price.rule}`) ?? price.rule}
              {price.context_threshold_tokens ? ` · ${t('prices.contextTier', { tokens: f.compact(price.context_threshold_tokens) })}` : ''}
              {price.service_tier_rule ? ` · ${price.service_tier_rule.serviceTier || price.service_tier_rule.mode}` : ''}
              {price.tier_multiplier !== 1 ? ` · ×${price.tier_multiplier}` : ''}
            </dd>
          </>
        )}
      </dl>
      {!value.priced && <p class="banner warn">{value.unpriced_reason ?? t('explain.unpriced')}</p>}
      {price?.approximate && <p class="muted small">{t('explain.approximate')}</p>}
      {price && price.lines.length > 0 && (
        <DataTable
          label={t('detail.cost')}
          rows={price.lines}
          rowKey={(line) => line.class}
          columns={[
            { key: 'class', header: t('explain.class'), cell: (line) => tMaybe(`explain.class.${line.class}`) ?? line.class },
            { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (line) => f.int(line.tokens) },
            { key: 'rate', header: t('explain.rate'), numeric: true, cell: (line) => `$${Number(line.rate.toFixed(6))}${line.multiplier !== 1 ? ` ×${line.multiplier}` : ''}` },
            { key: 'cost', header: t('col.cost'), numeric: true, cell: (line) => f.money(line.cost) },
          ]}
        />
      )}
      <p class="muted small">{t('explain.reasoning')}</p>
    </div>
  );
}
