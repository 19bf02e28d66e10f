// The filter bar of the Request Monitor and Usage Analytics: search, model, API key,
// status, and (advanced) provider, account, channel, auth file, latency and cache.
import { useAliases } from '../lib/aliases';
import { t } from '../lib/i18n';
import { identityLabel, keyLabel } from '../lib/labels';
import { activeFilterCount, EMPTY_FILTERS, type FilterState, type StatusFilter } from '../lib/query';
import type { FilterSelectors } from '../lib/types';
import { Segmented, SelectField, TextField } from './ui';

export function FilterBar({
  value,
  onChange,
  options,
}: {
  value: FilterState;
  onChange: (next: FilterState) => void;
  options: FilterSelectors | undefined;
}) {
  const aliases = useAliases();
  const set = <K extends keyof FilterState>(name: K, field: FilterState[K]) => onChange({ ...value, [name]: field });
  const strings = (list: string[] | undefined, current: string) => {
    const values = [...new Set([...(list ?? []), ...(current ? [current] : [])])].filter(Boolean).sort();
    return values.map((item) => ({ value: item, label: item }));
  };
  const keyOptions = [...new Set([...(options?.api_key_hashes ?? []), ...(value.apiKey ? [value.apiKey] : [])])]
    .filter(Boolean)
    .map((hash) => ({ value: hash, label: keyLabel(hash, aliases) }))
    .sort((left, right) => left.label.localeCompare(right.label));
  const channels = new Map<string, string>();
  for (const account of options?.account_stats ?? []) {
    for (const index of account.auth_indices ?? []) if (index) channels.set(index, `${identityLabel(account)} (${index.slice(0, 8)})`);
  }
  if (value.channel && !channels.has(value.channel)) channels.set(value.channel, value.channel);
  const accountOptions = [
    ...new Set([
      ...(options?.accounts ?? []),
      ...(options?.account_stats ?? []).map((account) => identityLabel(account)),
      ...(value.account ? [value.account] : []),
    ]),
  ]
    .filter((item) => item && item !== '—')
    .sort()
    .map((item) => ({ value: item, label: item }));
  const active = activeFilterCount(value);
  const advancedActive =
    active - [value.model, value.apiKey, value.search, value.status !== 'all' ? 'x' : ''].filter(Boolean).length;

  return (
    <div class="filter-bar" role="search" aria-label={t('filters.label')}>
      <div class="filter-row">
        <TextField label={t('filters.search')} value={value.search} onInput={(text) => set('search', text)} placeholder={t('filters.searchHint')} testId="filter-search" />
        <SelectField label={t('filters.model')} value={value.model} onChange={(model) => set('model', model)} options={strings(options?.models, value.model)} allLabel={t('filters.all')} testId="filter-model" />
        <SelectField label={t('filters.apiKey')} value={value.apiKey} onChange={(key) => set('apiKey', key)} options={keyOptions} allLabel={t('filters.all')} testId="filter-key" />
        <div class="field">
          <span class="field-label" id="status-filter-label">
            {t('filters.status')}
          </span>
          <Segmented<StatusFilter>
            label={t('filters.status')}
            value={value.status}
            onChange={(status) => set('status', status)}
            choices={[
              { value: 'all', label: t('filters.statusAll') },
              { value: 'success', label: t('filters.statusSuccess') },
              { value: 'failure', label: t('filters.statusFailure') },
            ]}
            testId="filter-status"
          />
        </div>
      </div>
      <details class="filter-advanced" open={advancedActive > 0}>
        <summary>
          {t('filters.more')}
          {advancedActive > 0 && <span class="badge">{advancedActive}</span>}
        </summary>
        <div class="filter-row">
          <SelectField label={t('filters.provider')} value={value.provider} onChange={(provider) => set('provider', provider)} options={strings(options?.providers, value.provider)} allLabel={t('filters.all')} testId="filter-provider" />
          <SelectField label={t('filters.account')} value={value.account} onChange={(account) => set('account', account)} options={accountOptions} allLabel={t('filters.all')} testId="filter-account" />
          <SelectField
            label={t('filters.channel')}
            value={value.channel}
            onChange={(channel) => set('channel', channel)}
            options={[...channels.entries()].map(([index, label]) => ({ value: index, label })).sort((left, right) => left.label.localeCompare(right.label))}
            allLabel={t('filters.all')}
            testId="filter-channel"
          />
          <SelectField label={t('filters.authFile')} value={value.authFile} onChange={(file) => set('authFile', file)} options={strings(options?.auth_files, value.authFile)} allLabel={t('filters.all')} testId="filter-auth-file" />
          <SelectField
            label={t('filters.latency')}
            value={String(value.minLatencyMs || '')}
            onChange={(latency) => set('minLatencyMs', Number(latency) || 0)}
            options={[3000, 10000, 30000].map((ms) => ({ value: String(ms), label: t('filters.latencyOver', { seconds: ms / 1000 }) }))}
            allLabel={t('filters.all')}
            testId="filter-latency"
          />
          <SelectField
            label={t('filters.cache')}
            value={value.cache}
            onChange={(cache) => set('cache', cache)}
            options={(['hit', 'miss', 'read', 'creation'] as const).map((cache) => ({ value: cache, label: t(`filters.cache.${cache}`) }))}
            allLabel={t('filters.all')}
            testId="filter-cache"
          />
        </div>
      </details>
      {active > 0 && (
        <button type="button" class="link-button" onClick={() => onChange(EMPTY_FILTERS)} data-testid="filter-clear">
          {t('filters.clear', { count: active })}
        </button>
      )}
    </div>
  );
}
