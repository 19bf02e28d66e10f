// Model prices (list, edit, pin, delete, sync with its report, the cost of one request)
// and API key aliases.
import { useMemo, useState } from 'preact/hooks';

import { ApiError } from '../lib/api';
import { aliases as aliasStore, loadAliases } from '../lib/aliases';
import { api } from '../lib/endpoints';
import { describeError, InputError } from '../lib/errors';
import { DASH, fmt } from '../lib/format';
import { t } from '../lib/i18n';
import { keyLabel } from '../lib/labels';
import { editPrice, priceRows, type PriceRow, type RateInput } from '../lib/prices';
import { useResource } from '../lib/resource';
import { activeTimeZone } from '../lib/settings';
import { useStore } from '../lib/store';
import type { ModelPrice, PriceBook, SyncResult } from '../lib/types';
import { DataTable } from '../components/Table';
import { toast } from '../components/Toast';
import { Badge, Card, Dialog, ErrorNote, Segmented, TextField, Unavailable } from '../components/ui';
import { Explanation } from '../components/Usage';

type Filter = 'all' | 'missing' | 'saved' | 'pending';

export function PricesPage() {
  const prices = useResource('prices', (signal) => api.prices(signal));
  const usage = useResource('price-usage', (signal) => api.priceUsage(signal));
  const [filter, setFilter] = useState<Filter>('all');
  const [search, setSearch] = useState('');
  const [editing, setEditing] = useState<{ model: string; price?: ModelPrice } | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [syncing, setSyncing] = useState(false);
  const [report, setReport] = useState<SyncResult | null>(null);
  const f = fmt();

  const book = prices.data?.prices ?? {};
  const rows = useMemo(() => priceRows(book, usage.data?.models ?? [], report), [prices.data, usage.data, report]);
  const counts = {
    all: rows.length,
    missing: rows.filter((row) => row.status === 'missing').length,
    saved: rows.filter((row) => row.status === 'saved').length,
    pending: rows.filter((row) => row.status === 'pending').length,
  };
  const needle = search.trim().toLowerCase();
  const shown = rows.filter((row) => (filter === 'all' || row.status === filter) && (!needle || row.model.toLowerCase().includes(needle)));

  const save = async (next: PriceBook, message: string) => {
    const saved = await api.savePrices(next);
    prices.reload();
    toast(message);
    return saved;
  };

  const sync = async () => {
    setSyncing(true);
    try {
      const models = counts.missing > 0 ? rows.filter((row) => row.status === 'missing').map((row) => row.model) : undefined;
      const result = await api.syncPrices(models);
      setReport(result);
      prices.reload();
    } catch (error) {
      toast(describeError(error).title, 'bad');
    } finally {
      setSyncing(false);
    }
  };

  const togglePin = async (row: PriceRow) => {
    if (!row.price) return;
    try {
      const saved = await save({ ...book, [row.model]: { ...row.price, pinned: !row.price.pinned } }, row.price.pinned ? t('prices.unpinned', { model: row.model }) : t('prices.pinned', { model: row.model }));
      if (saved.prices[row.model]?.pinned === undefined) toast(t('prices.pinUnsupported'), 'bad');
    } catch (error) {
      toast(describeError(error).title, 'bad');
    }
  };

  if (prices.error instanceof ApiError && prices.error.unavailable) {
    return (
      <div class="page" data-testid="page-prices">
        <Card title={t('prices.title')}>
          <Unavailable what={t('prices.what')} />
        </Card>
        <AliasesCard />
      </div>
    );
  }

  return (
    <div class="page" data-testid="page-prices">
      <Card
        title={t('prices.title')}
        subtitle={t('prices.unit')}
        resource={prices}
        class="span-full"
        actions={
          <>
            <button type="button" class="button" onClick={() => setEditing({ model: '' })} data-testid="price-add">
              {t('prices.add')}
            </button>
            <button type="button" class="button primary" onClick={sync} disabled={syncing} data-testid="price-sync">
              {syncing ? t('prices.syncing') : t('prices.sync')}
            </button>
          </>
        }
      >
        <div class="toolbar">
          <Segmented<Filter>
            label={t('prices.filter')}
            value={filter}
            onChange={setFilter}
            choices={(['all', 'missing', 'saved', 'pending'] as const).map((value) => ({ value, label: `${t(`prices.filter.${value}`)} (${counts[value]})` }))}
          />
          <TextField label={t('filters.search')} value={search} onInput={setSearch} testId="price-search" />
        </div>
        {usage.data && (
          <p class="muted small">
            {t('prices.sampled', { sampled: f.int(usage.data.sampled_events), total: f.int(usage.data.total_events) })}
          </p>
        )}
        <DataTable
          label={t('prices.title')}
          rows={shown}
          rowKey={(row) => row.model}
          csvName="model-prices.csv"
          testId="price-table"
          pageSize={50}
          initialSort={{ key: 'calls', descending: true }}
          columns={[
            { key: 'model', header: t('col.model'), cell: (row) => row.model, csv: (row) => row.model, sort: (row) => row.model },
            { key: 'calls', header: t('col.calls'), numeric: true, cell: (row) => f.int(row.calls), csv: (row) => row.calls, sort: (row) => row.calls },
            { key: 'prompt', header: t('prices.prompt'), numeric: true, cell: (row) => rate(row.price?.prompt), csv: (row) => row.price?.prompt },
            { key: 'completion', header: t('prices.completion'), numeric: true, cell: (row) => rate(row.price?.completion), csv: (row) => row.price?.completion },
            { key: 'cache', header: t('prices.cache'), numeric: true, cell: (row) => rate(row.price?.cache), csv: (row) => row.price?.cache },
            { key: 'cacheRead', header: t('prices.cacheRead'), numeric: true, cell: (row) => rate(row.price?.cacheRead), csv: (row) => row.price?.cacheRead },
            { key: 'cacheCreation', header: t('prices.cacheCreation'), numeric: true, cell: (row) => rate(row.price?.cacheCreation), csv: (row) => row.price?.cacheCreation },
            {
              key: 'rules',
              header: t('prices.rules'),
              cell: (row) => (
                <span class="pill-row">
                  {(row.price?.contextTiers ?? []).map((tier) => (
                    <Badge key={`c${tier.thresholdTokens}`}>{t('prices.contextTier', { tokens: f.compact(tier.thresholdTokens) })}</Badge>
                  ))}
                  {(row.price?.serviceTiers ?? []).map((tier) => (
                    <Badge key={`s${tier.mode}${tier.serviceTier}`}>{tier.serviceTier || tier.mode}</Badge>
                  ))}
                </span>
              ),
            },
            {
              key: 'source',
              header: t('prices.source'),
              cell: (row) => (
                <span class="pill-row">
                  {row.status === 'missing' ? <Badge tone="warn">{t('prices.filter.missing')}</Badge> : row.status === 'pending' ? <Badge tone="warn">{t('prices.filter.pending')}</Badge> : <span>{row.price?.source || t('prices.manual')}</span>}
                  {row.price?.pinned && <Badge tone="good">{t('prices.pin')}</Badge>}
                </span>
              ),
              csv: (row) => row.price?.source || (row.price ? 'manual' : ''),
            },
            {
              key: 'actions',
              header: t('prices.actions'),
              cell: (row) => (
                <span class="row-actions">
                  <button type="button" class="button small" onClick={() => setEditing({ model: row.model, price: row.price })} data-testid={`price-edit-${row.model}`}>
                    {row.price ? t('common.edit') : t('prices.setPrice')}
                  </button>
                  {row.price && (
                    <button type="button" class="button small" onClick={() => togglePin(row)} aria-pressed={!!row.price.pinned}>
                      {row.price.pinned ? t('prices.unpin') : t('prices.pin')}
                    </button>
                  )}
                  {row.price && (
                    <button type="button" class="button small danger" onClick={() => setDeleting(row.model)}>
                      {t('common.delete')}
                    </button>
                  )}
                </span>
              ),
            },
          ]}
        />
      </Card>
      <ExplainCard />
      <AliasesCard />
      {editing && (
        <PriceEditor
          model={editing.model}
          price={editing.price}
          onClose={() => setEditing(null)}
          onSave={async (model, input) => {
            await save(editPrice(book, model, input), t('prices.saved', { model }));
            setEditing(null);
          }}
        />
      )}
      {deleting && (
        <Dialog
          title={t('prices.deleteTitle', { model: deleting })}
          onClose={() => setDeleting(null)}
          footer={
            <>
              <button type="button" class="button" onClick={() => setDeleting(null)}>
                {t('common.cancel')}
              </button>
              <button
                type="button"
                class="button danger"
                onClick={async () => {
                  const { [deleting]: _removed, ...rest } = book;
                  try {
                    await save(rest, t('prices.deleted', { model: deleting }));
                  } catch (error) {
                    toast(describeError(error).title, 'bad');
                  }
                  setDeleting(null);
                }}
              >
                {t('common.delete')}
              </button>
            </>
          }
        >
          <p>{t('prices.deleteBody')}</p>
        </Dialog>
      )}
      {report && <SyncReport report={report} book={book} onClose={() => setReport(null)} onChoose={(model, price) => save({ ...book, [model]: price }, t('prices.saved', { model }))} />}
    </div>
  );
}

function rate(value: number | undefined): string {
  if (value === undefined || value === null) return DASH;
  return `$${Number(value.toFixed(6))}`;
}

function PriceEditor({ model, price, onClose, onSave }: { model: string; price?: ModelPrice; onClose: () => void; onSave: (model: string, input: RateInput) => Promise<void> }) {
  const text = (value: number | undefined) => (value === undefined || value === null ? '' : String(value));
  const [name, setName] = useState(model);
  const [input, setInput] = useState<RateInput>({
    prompt: text(price?.prompt),
    completion: text(price?.completion),
    cache: text(price?.cache),
    cacheRead: text(price?.cacheRead),
    cacheCreation: text(price?.cacheCreation),
  });
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const hasTiers = (price?.contextTiers?.length ?? 0) + (price?.serviceTiers?.length ?? 0) > 0;

  const submit = async (event: Event) => {
    event.preventDefault();
    if (!name.trim()) return setError(new InputError(t('prices.modelRequired')));
    for (const value of Object.values(input)) {
      if (value.trim() && !(Number(value) >= 0)) return setError(new InputError(t('prices.rateInvalid')));
    }
    setBusy(true);
    try {
      await onSave(name.trim(), input);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const field = (key: keyof RateInput, label: string) => (
    <TextField label={label} value={input[key]} onInput={(value) => setInput({ ...input, [key]: value })} inputMode="decimal" testId={`price-input-${key}`} />
  );
  return (
    <Dialog
      title={model ? t('prices.editTitle', { model }) : t('prices.add')}
      onClose={onClose}
      testId="price-editor"
      footer={
        <>
          <button type="button" class="button" onClick={onClose}>
            {t('common.cancel')}
          </button>
          <button type="submit" form="price-form" class="button primary" disabled={busy} data-testid="price-save">
            {t('common.save')}
          </button>
        </>
      }
    >
      <form id="price-form" class="form" onSubmit={submit}>
        {!model && <TextField label={t('col.model')} value={name} onInput={setName} testId="price-input-model" autoFocus />}
        <p class="muted small">{t('prices.unit')}</p>
        <div class="form-grid">
          {field('prompt', t('prices.prompt'))}
          {field('completion', t('prices.completion'))}
          {field('cache', t('prices.cache'))}
          {field('cacheRead', t('prices.cacheRead'))}
          {field('cacheCreation', t('prices.cacheCreation'))}
        </div>
        {hasTiers && <p class="banner warn">{t('prices.tiersDropped')}</p>}
        <p class="muted small">{t('prices.manualPinned')}</p>
        {error !== null && <ErrorNote error={error} />}
      </form>
    </Dialog>
  );
}

function SyncReport({ report, book, onClose, onChoose }: { report: SyncResult; book: PriceBook; onClose: () => void; onChoose: (model: string, price: ModelPrice) => Promise<unknown> }) {
  const f = fmt();
  const [chosen, setChosen] = useState<Record<string, boolean>>({});
  return (
    <Dialog title={t('prices.reportTitle')} onClose={onClose} testId="sync-report">
      <dl class="detail-list">
        <dt>{t('prices.reportSources')}</dt>
        <dd>{report.sources.join(', ') || DASH}</dd>
        <dt>{t('prices.reportImported')}</dt>
        <dd>{f.int(report.imported)}</dd>
        <dt>{t('prices.reportSkipped')}</dt>
        <dd>{f.int(report.skipped)}</dd>
      </dl>
      {(report.sourceResults ?? []).length > 0 && (
        <ul class="plain-list">
          {report.sourceResults!.map((source) => (
            <li key={source.source}>
              <strong>{source.source}</strong>: {t('prices.reportSourceLine', { models: f.int(source.models), skipped: f.int(source.skipped) })}
              {source.error && <span class="error-detail"> {source.error}</span>}
            </li>
          ))}
        </ul>
      )}
      {Object.keys(report.matched ?? {}).length > 0 && (
        <details open>
          <summary>{t('prices.reportMatched', { count: Object.keys(report.matched!).length })}</summary>
          <p class="small">{Object.keys(report.matched!).join(', ')}</p>
        </details>
      )}
      {(report.candidates ?? []).length > 0 && (
        <section class="detail-section">
          <h3>{t('prices.reportCandidates')}</h3>
          {report.candidates!.map((entry) => (
            <div key={entry.model} class="candidate">
              <strong>{entry.model}</strong>
              <ul class="plain-list">
                {entry.candidates.map((candidate) => (
                  <li key={candidate.sourceModelId}>
                    {candidate.sourceModelId} · {f.percent(candidate.score)} · {candidate.reason}{' '}
                    <button
                      type="button"
                      class="button small"
                      disabled={chosen[entry.model] || !!book[entry.model]}
                      onClick={async () => {
                        await onChoose(entry.model, candidate.price);
                        setChosen({ ...chosen, [entry.model]: true });
                      }}
                    >
                      {t('prices.useCandidate')}
                    </button>
                  </li>
                ))}
              </ul>
            </div>
          ))}
        </section>
      )}
      {(report.unmatched ?? []).length > 0 && (
        <p class="small">
          <strong>{t('prices.reportUnmatched')}</strong> {report.unmatched!.join(', ')}
        </p>
      )}
      {(report.pinned ?? []).length > 0 && (
        <p class="small">
          <strong>{t('prices.reportPinned')}</strong> {report.pinned!.join(', ')}
        </p>
      )}
      {(report.preserved ?? []).length > 0 && (
        <p class="small">
          <strong>{t('prices.reportPreserved')}</strong> {report.preserved!.join(', ')}
        </p>
      )}
    </Dialog>
  );
}

function ExplainCard() {
  const [hash, setHash] = useState('');
  const [asked, setAsked] = useState('');
  const explanation = useResource(asked ? `explain:${asked}` : null, (signal) => api.explainCost(asked, signal));
  return (
    <Card title={t('prices.explainTitle')} subtitle={t('prices.explainHint')} resource={asked ? explanation : undefined} unavailableWhat={t('detail.costWhat')}>
      <form
        class="inline-form"
        onSubmit={(event) => {
          event.preventDefault();
          setAsked(hash.trim());
        }}
      >
        <TextField label={t('detail.eventHash')} value={hash} onInput={setHash} />
        <button type="submit" class="button">
          {t('prices.explain')}
        </button>
      </form>
      {asked && explanation.data && <Explanation value={explanation.data} />}
    </Card>
  );
}

/** Client keys seen recently, with their aliases; aliases replace key hashes everywhere. */
function AliasesCard() {
  const timeZone = activeTimeZone();
  const state = useStore(aliasStore);
  const keys = useResource(`alias-keys:${timeZone}`, (signal) => {
    const now = Date.now();
    return api.analytics({ from_ms: 1, to_ms: now + 1, now_ms: now, time_zone: timeZone, include: { filter_selectors: true } }, signal);
  });
  const [drafts, setDrafts] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const f = fmt();
  const hashes = useMemo(() => {
    const all = new Set<string>([...(keys.data?.filter_options?.api_key_hashes ?? []), ...state.items.map((item) => item.apiKeyHash)]);
    return [...all].filter(Boolean).sort();
  }, [keys.data, state.items]);

  if (!state.available) {
    return (
      <Card title={t('aliases.title')}>
        <Unavailable what={t('aliases.what')} />
      </Card>
    );
  }
  const saveAlias = async (hash: string) => {
    const alias = (drafts[hash] ?? '').trim();
    setError(null);
    try {
      if (alias) await api.saveAliases([{ apiKeyHash: hash, alias }]);
      else await api.deleteAlias(hash);
      await loadAliases(true);
      const { [hash]: _saved, ...rest } = drafts;
      setDrafts(rest);
      toast(alias ? t('aliases.saved', { alias }) : t('aliases.removed'));
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <Card title={t('aliases.title')} subtitle={t('aliases.hint')} resource={keys} class="span-full">
      {error !== null && <ErrorNote error={error} />}
      <DataTable
        label={t('aliases.title')}
        rows={hashes}
        rowKey={(hash) => hash}
        csvName="api-key-aliases.csv"
        empty={t('aliases.none')}
        testId="alias-table"
        columns={[
          { key: 'hash', header: t('aliases.hash'), cell: (hash) => <span class="mono">{keyLabel(hash, new Map())}</span>, csv: (hash) => hash },
          {
            key: 'alias',
            header: t('aliases.alias'),
            cell: (hash) => (
              <form
                class="inline-form"
                onSubmit={(event) => {
                  event.preventDefault();
                  void saveAlias(hash);
                }}
              >
                <label class="visually-hidden" for={`alias-${hash}`}>
                  {t('aliases.aliasFor', { key: keyLabel(hash, new Map()) })}
                </label>
                <input id={`alias-${hash}`} value={drafts[hash] ?? state.map.get(hash) ?? ''} maxLength={120} onInput={(event) => setDrafts({ ...drafts, [hash]: event.currentTarget.value })} />
                <button type="submit" class="button small">
                  {t('common.save')}
                </button>
              </form>
            ),
            csv: (hash) => state.map.get(hash) ?? '',
          },
          { key: 'updated', header: t('aliases.updated'), cell: (hash) => f.dateTime(state.items.find((item) => item.apiKeyHash === hash)?.updatedAtMs) },
        ]}
      />
    </Card>
  );
}
