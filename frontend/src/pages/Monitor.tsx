// Request Monitor: ranges, filters, summary, the timeline with collection gaps, and the
// accounts / client keys / realtime tabs with cursor paging and the request detail drawer.
import { useEffect, useMemo, useState } from 'preact/hooks';

import { useAliases } from '../lib/aliases';
import { api } from '../lib/endpoints';
import { mergeEvents } from '../lib/events';
import { fmt } from '../lib/format';
import { t, tMaybe } from '../lib/i18n';
import { identityLabel, keyLabel, maskIdentifier } from '../lib/labels';
import { analyticsBody, EMPTY_FILTERS, type FilterState } from '../lib/query';
import { useDebounced, useResource } from '../lib/resource';
import { navigate, route } from '../lib/router';
import { activeTimeZone, settings } from '../lib/settings';
import { storage, useStore } from '../lib/store';
import { monitorRange, type MonitorRange, type TimeRange } from '../lib/time';
import type { GroupStat, Include, UsageEvent } from '../lib/types';
import { TimeChart, type SeriesSpec, type Span } from '../components/Chart';
import { FilterBar } from '../components/FilterBar';
import { DataTable } from '../components/Table';
import { CollectionBanner, EventDetail, EventTable, SummaryStats } from '../components/Usage';
import { Card, Checkbox, Dialog, Empty, Segmented, SelectField, Tabs } from '../components/ui';
import { RangePicker } from '../components/RangePicker';

type Tab = 'accounts' | 'keys' | 'realtime';

interface MonitorState {
  range: MonitorRange;
  custom?: TimeRange;
  filters: FilterState;
  tab: Tab;
  refreshSecs: number;
  masked: boolean;
}

const STATE_KEY = 'cpamp.monitor';
const PAGE_LIMIT = 500;

function initialState(params: URLSearchParams): MonitorState {
  const saved = storage.getJson<Partial<MonitorState>>(STATE_KEY) ?? {};
  const state: MonitorState = {
    range: saved.range ?? 'today',
    custom: saved.custom,
    filters: { ...EMPTY_FILTERS, ...saved.filters, search: '' },
    tab: saved.tab ?? 'accounts',
    refreshSecs: saved.refreshSecs ?? 30,
    masked: saved.masked ?? false,
  };
  const status = params.get('status');
  if (status === 'failure' || status === 'success') state.filters = { ...EMPTY_FILTERS, status };
  const tab = params.get('tab');
  if (tab === 'accounts' || tab === 'keys' || tab === 'realtime') state.tab = tab;
  return state;
}

export function MonitorPage() {
  const current = useStore(route);
  const [state, setState] = useState(() => initialState(current.params));
  const [events, setEvents] = useState<UsageEvent[]>([]);
  const [cursor, setCursor] = useState<{ beforeMs: number; beforeId: number; hasMore: boolean } | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [moreError, setMoreError] = useState<unknown>(null);
  const [open, setOpen] = useState<UsageEvent | null>(null);
  const [openGroup, setOpenGroup] = useState<GroupStat | null>(null);
  const timeZone = activeTimeZone();
  const search = useDebounced(state.filters.search, 400);
  const filters = useMemo(() => ({ ...state.filters, search }), [state.filters, search]);

  useEffect(() => {
    const { filters: saved, ...rest } = state;
    storage.setJson(STATE_KEY, { ...rest, filters: { ...saved, search: '' } });
  }, [state]);

  const update = (change: Partial<MonitorState>) => setState((previous) => ({ ...previous, ...change }));
  const rangeNow = (now: number) => monitorRange(state.range, now, timeZone, state.custom);
  const granularity = (range: TimeRange): 'hour' | 'day' => (range.toMs - range.fromMs <= 86_400_000 + 1 ? 'hour' : 'day');

  const scopeKey = JSON.stringify([state.range, state.custom, timeZone]);
  const mainKey = JSON.stringify([scopeKey, filters, state.tab]);

  const selectors = useResource(`monitor-selectors:${JSON.stringify([scopeKey, search])}`, (signal) => {
    const now = Date.now();
    return api.analytics(analyticsBody(rangeNow(now), now, timeZone, { ...EMPTY_FILTERS, search }, { filter_options: true, filter_selectors: true }), signal);
  });

  const main = useResource(
    `monitor:${mainKey}`,
    (signal) => {
      const now = Date.now();
      const range = rangeNow(now);
      const include: Include = { summary: true, summary_profile: 'compact', timeline: true, granularity: granularity(range) };
      if (state.tab === 'accounts') include.account_stats = true;
      if (state.tab === 'keys') include.api_key_stats = true;
      if (state.tab === 'realtime') include.events_page = { limit: PAGE_LIMIT, before_ms: null, before_id: null };
      return api.analytics(analyticsBody(range, now, timeZone, filters, include), signal).then((data) => ({ data, range }));
    },
    { refreshMs: state.refreshSecs * 1000 },
  );

  const gaps = useResource(`monitor-gaps:${scopeKey}:${main.updatedAt}`, (signal) => {
    const range = main.data?.range ?? rangeNow(Date.now());
    return api.gaps(range.fromMs, range.toMs, signal);
  });

  // A new scope starts a new event list; a refresh of the same scope merges the newest page.
  useEffect(() => {
    setEvents([]);
    setCursor(null);
    setMoreError(null);
  }, [mainKey]);
  useEffect(() => {
    const page = main.data?.data.events;
    if (!page) return;
    setEvents((kept) => mergeEvents(kept, page.items));
    setCursor((previous) => previous ?? { beforeMs: page.next_before_ms, beforeId: page.next_before_id, hasMore: page.has_more });
  }, [main.data]);

  const loadMore = async () => {
    if (!cursor?.hasMore || loadingMore) return;
    setLoadingMore(true);
    setMoreError(null);
    try {
      const range = main.data?.range ?? rangeNow(Date.now());
      const response = await api.analytics(
        analyticsBody(range, Date.now(), timeZone, filters, { events_page: { limit: PAGE_LIMIT, before_ms: cursor.beforeMs, before_id: cursor.beforeId } }),
      );
      const page = response.events;
      if (page) {
        setEvents((kept) => mergeEvents(kept, page.items));
        setCursor({ beforeMs: page.next_before_ms, beforeId: page.next_before_id, hasMore: page.has_more });
      }
    } catch (error) {
      setMoreError(error);
    } finally {
      setLoadingMore(false);
    }
  };

  const response = main.data?.data;
  const summary = response?.summary;
  const f = fmt();
  const language = settings.get().language;
  const timeline = response?.timeline ?? [];
  const x = useMemo(() => timeline.map((point) => point.bucket_ms), [response]);
  const series = useMemo<SeriesSpec[]>(
    () => [
      { label: t('summary.calls'), kind: 'bars', color: 'c2', values: timeline.map((point) => point.calls) },
      { label: t('dashboard.failures'), kind: 'bars', color: 'bad', values: timeline.map((point) => point.failure) },
    ],
    [response, language],
  );
  const gapSpans = useMemo<Span[]>(
    () => (gaps.data?.gaps ?? []).map((gap) => ({ startMs: gap.startMs, endMs: gap.endMs ?? Date.now() })),
    [gaps.data],
  );

  return (
    <div class="page" data-testid="page-monitor">
      <CollectionBanner />
      <div class="toolbar">
        <RangePicker<MonitorRange>
          value={state.range}
          custom={state.custom}
          choices={['today', 'yesterday', '7d', '14d', '30d', 'all', 'custom']}
          onChange={(range, custom) => update({ range, custom })}
        />
        <SelectField
          label={t('monitor.autoRefresh')}
          value={String(state.refreshSecs)}
          onChange={(value) => update({ refreshSecs: Number(value) })}
          options={[0, 5, 10, 30, 60, 300].map((seconds) => ({ value: String(seconds), label: seconds ? t('monitor.everySeconds', { seconds }) : t('common.off') }))}
          testId="auto-refresh"
        />
        <div class="toolbar-links">
          <span class="muted small" aria-live="polite">
            {main.updatedAt ? t('monitor.lastSync', { time: f.time(main.updatedAt) }) : ''}
          </span>
          <a class="button small" href="#/transfer">
            {t('monitor.export')}
          </a>
          <a class="button small" href="#/model-prices">
            {t('monitor.pricing')}
          </a>
        </div>
      </div>
      <FilterBar value={state.filters} onChange={(next) => update({ filters: next })} options={selectors.data?.filter_options} />
      <Card title={t('monitor.summary')} resource={main} class="span-full">
        {summary && <SummaryStats summary={summary} unpriced={response?.unpriced_models} />}
        {summary && summary.total_calls === 0 && <Empty>{t('monitor.emptyScope')}</Empty>}
      </Card>
      <Card title={t('monitor.timeline')} subtitle={gapSpans.length ? t('monitor.gapsShown', { count: gapSpans.length }) : t('monitor.gapsNone')} resource={main} class="span-full">
        {response && main.data && (
          <TimeChart
            x={x}
            series={series}
            granularity={response.granularity}
            gaps={gapSpans}
            xRange={main.data.range.fromMs > 1 ? [main.data.range.fromMs, main.data.range.toMs] : undefined}
            label={t('monitor.timeline')}
            testId="monitor-chart"
          />
        )}
        {gapSpans.length > 0 && (
          <ul class="gap-list">
            {(gaps.data?.gaps ?? []).slice(0, 5).map((gap) => (
              <li key={gap.id}>
                <span class="swatch gap" aria-hidden="true" /> {f.dateTime(gap.startMs)} → {gap.endMs ? f.dateTime(gap.endMs) : t('monitor.gapOpen')} · {f.duration(gap.durationMs)} · {tMaybe(`gap.${gap.cause}`) ?? gap.cause}
              </li>
            ))}
          </ul>
        )}
      </Card>
      <section class="card span-full">
        <div class="tab-header">
          <Tabs<Tab>
            label={t('monitor.tabs')}
            value={state.tab}
            onChange={(tab) => {
              update({ tab });
              navigate('/monitoring', { tab }, true);
            }}
            tabs={[
              { value: 'accounts', label: t('monitor.accounts') },
              { value: 'keys', label: t('monitor.keys') },
              { value: 'realtime', label: t('monitor.realtime'), badge: state.tab === 'realtime' ? f.int(events.length) : undefined },
            ]}
          />
          {state.tab !== 'realtime' && <Checkbox label={t('monitor.mask')} checked={state.masked} onChange={(masked) => update({ masked })} />}
        </div>
        <div role="tabpanel" aria-busy={main.busy ? 'true' : 'false'} data-testid={`monitor-tab-${state.tab}`}>
          {state.tab === 'accounts' && response && (
            <GroupTable rows={response.account_stats ?? []} kind="accounts" masked={state.masked} onOpen={setOpenGroup} />
          )}
          {state.tab === 'keys' && response && <GroupTable rows={response.api_key_stats ?? []} kind="keys" masked={state.masked} onOpen={setOpenGroup} />}
          {state.tab === 'realtime' && (
            <div class="stack">
              <EventTable events={events} onOpen={setOpen} label={t('monitor.realtime')} csvName="requests.csv" />
              <div class="table-footer">
                <span class="muted small">
                  {t('monitor.shownOf', { shown: f.int(events.length), total: f.int(response?.events?.total_count ?? events.length) })}
                </span>
                {cursor?.hasMore && events.length < 2000 && (
                  <button type="button" class="button small" onClick={loadMore} disabled={loadingMore} data-testid="load-more">
                    {loadingMore ? t('common.loading') : t('monitor.loadMore')}
                  </button>
                )}
              </div>
              {moreError !== null && <p class="error-note">{String((moreError as Error).message)}</p>}
            </div>
          )}
        </div>
      </section>
      {open && <EventDetail event={open} onClose={() => setOpen(null)} />}
      {openGroup && <GroupDetail group={openGroup} kind={state.tab === 'keys' ? 'keys' : 'accounts'} onClose={() => setOpenGroup(null)} />}
    </div>
  );
}

function GroupTable({ rows, kind, masked, onOpen }: { rows: GroupStat[]; kind: 'accounts' | 'keys'; masked: boolean; onOpen: (row: GroupStat) => void }) {
  const f = fmt();
  const aliases = useAliases();
  const name = (row: GroupStat) => {
    const label = kind === 'keys' ? keyLabel(row.api_key_hash || row.id, aliases) : identityLabel(row);
    return masked && !(kind === 'keys' && aliases.has((row.api_key_hash ?? '').toLowerCase())) ? maskIdentifier(label) : label;
  };
  return (
    <DataTable
      label={kind === 'keys' ? t('monitor.keys') : t('monitor.accounts')}
      rows={rows}
      rowKey={(row) => row.id}
      onOpen={onOpen}
      csvName={kind === 'keys' ? 'client-keys.csv' : 'accounts.csv'}
      pageSize={20}
      testId={`group-table-${kind}`}
      initialSort={{ key: 'last', descending: true }}
      empty={t('monitor.emptyScope')}
      columns={[
        { key: 'name', header: kind === 'keys' ? t('col.apiKey') : t('col.account'), cell: name, csv: name, sort: name },
        ...(kind === 'accounts'
          ? [{ key: 'provider', header: t('col.provider'), cell: (row: GroupStat) => row.auth_provider_snapshot || '—', csv: (row: GroupStat) => row.auth_provider_snapshot }]
          : []),
        { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls, sort: (row) => row.calls },
        { key: 'success', header: t('col.successRate'), numeric: true, cell: (row) => f.percent(row.success_rate), csv: (row) => row.success_rate, sort: (row) => row.success_rate },
        { key: 'failures', header: t('col.failures'), numeric: true, cell: (row) => f.int(row.failure_calls), csv: (row) => row.failure_calls, sort: (row) => row.failure_calls },
        { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (row) => f.compact(row.total_tokens), csv: (row) => row.total_tokens, sort: (row) => row.total_tokens },
        { key: 'cost', header: t('col.cost'), numeric: true, cell: (row) => f.money(row.cost), csv: (row) => row.cost, sort: (row) => row.cost ?? -1 },
        { key: 'latency', header: t('col.latency'), numeric: true, cell: (row) => f.duration(row.average_latency_ms), csv: (row) => row.average_latency_ms, sort: (row) => row.average_latency_ms ?? -1 },
        { key: 'last', header: t('col.lastSeen'), cell: (row) => f.dateTime(row.last_seen_ms), csv: (row) => new Date(row.last_seen_ms).toISOString(), sort: (row) => row.last_seen_ms },
      ]}
    />
  );
}

function GroupDetail({ group, kind, onClose }: { group: GroupStat; kind: 'accounts' | 'keys'; onClose: () => void }) {
  const f = fmt();
  const aliases = useAliases();
  const title = kind === 'keys' ? keyLabel(group.api_key_hash || group.id, aliases) : identityLabel(group);
  const [view, setView] = useState<'models' | 'ids'>('models');
  return (
    <Dialog title={title} onClose={onClose} kind="drawer">
      <Segmented
        label={t('monitor.groupView')}
        value={view}
        onChange={setView}
        choices={[
          { value: 'models', label: t('monitor.models') },
          { value: 'ids', label: t('monitor.identifiers') },
        ]}
      />
      {view === 'models' ? (
        <DataTable
          label={t('monitor.models')}
          rows={group.models ?? []}
          rowKey={(row) => row.model}
          csvName="models.csv"
          columns={[
            { key: 'model', header: t('col.model'), cell: (row) => row.model, csv: (row) => row.model },
            { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls },
            { key: 'success', header: t('col.successRate'), numeric: true, cell: (row) => f.percent(row.success_rate), csv: (row) => row.success_rate },
            { key: 'tokens', header: t('col.tokens'), numeric: true, cell: (row) => f.compact(row.total_tokens), csv: (row) => row.total_tokens },
            { key: 'cost', header: t('col.cost'), numeric: true, cell: (row) => f.money(row.cost), csv: (row) => row.cost },
          ]}
        />
      ) : (
        <dl class="detail-list">
          <dt>{t('detail.authIndex')}</dt>
          <dd class="mono">{(group.auth_indices ?? []).join(', ') || '—'}</dd>
          <dt>{t('detail.source')}</dt>
          <dd class="mono">{(group.sources ?? []).join(', ') || '—'}</dd>
          {group.api_key_hash && (
            <>
              <dt>{t('detail.keyHash')}</dt>
              <dd class="mono">{group.api_key_hash}</dd>
            </>
          )}
        </dl>
      )}
    </Dialog>
  );
}
