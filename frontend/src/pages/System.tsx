// System: server status, the doctor's findings with their fixes, the collector, the CPA
// connection (edited through /usage-service/config), the database, display preferences.
import { useEffect, useMemo, useState } from 'preact/hooks';

import { logOut } from '../lib/api';
import { api } from '../lib/endpoints';
import { fmt } from '../lib/format';
import { t, tMaybe } from '../lib/i18n';
import { useResource } from '../lib/resource';
import { browserTimeZone, settings, updateSettings } from '../lib/settings';
import { storage, useStore } from '../lib/store';
import type { ManagerConfigResponse, StatusResponse } from '../lib/types';
import { normalizeBaseUrl } from '../lib/url';
import { Badge, Card, Checkbox, ErrorNote, SelectField, TextField } from '../components/ui';
import { toast } from '../components/Toast';

const REFRESH_MS = 60_000;

export function SystemPage() {
  const status = useResource('status', (signal) => api.status(signal), { refreshMs: REFRESH_MS });
  const info = useResource('system-info', (signal) => api.info(signal));
  const config = useResource('config', (signal) => api.config(signal));
  const f = fmt();
  const data = status.data;
  return (
    <div class="page" data-testid="page-system">
      <Card title={t('system.server')} resource={status}>
        {data && (
          <dl class="detail-list">
            <dt>{t('system.version')}</dt>
            <dd data-testid="server-version">{info.data?.version ?? '—'}</dd>
            <dt>{t('system.startedAt')}</dt>
            <dd>{f.dateTime(info.data?.startedAt)}</dd>
            <dt>{t('system.events')}</dt>
            <dd>{f.int(data.events)}</dd>
            <dt>{t('system.deadLetters')}</dt>
            <dd>{f.int(data.deadLetters)}</dd>
            <dt>{t('system.dataDir')}</dt>
            <dd class="mono">{data.dbPath}</dd>
          </dl>
        )}
      </Card>
      <Card title={t('system.collector')} resource={status}>
        {data && <CollectorFacts status={data} />}
      </Card>
      <Card title={t('system.diagnosis')} resource={status} class="span-full">
        {data?.diagnosis && <Diagnosis status={data} />}
      </Card>
      <Card title={t('system.connection')} resource={config} class="span-full">
        {config.data && <ConnectionForm config={config.data} onSaved={config.reload} />}
      </Card>
      <Card title={t('system.database')} resource={status}>
        {data?.database && (
          <dl class="detail-list">
            <dt>{t('system.dbSize')}</dt>
            <dd>{f.bytes(data.database.databaseBytes)}</dd>
            <dt>{t('system.walSize')}</dt>
            <dd>{f.bytes(data.database.walBytes)}</dd>
            <dt>{t('system.totalSize')}</dt>
            <dd>{f.bytes(data.database.totalBytes)}</dd>
            <dt>{t('system.checkpoint')}</dt>
            <dd>
              {data.database.checkpoint.mode || '—'} · {f.dateTime(data.database.checkpoint.executedAtMs)}
              {data.database.checkpoint.error && <span class="error-detail"> {data.database.checkpoint.error}</span>}
            </dd>
          </dl>
        )}
      </Card>
      <Card title={t('system.gaps')} resource={status}>
        {data && <GapList status={data} />}
      </Card>
      <PreferencesCard />
    </div>
  );
}

/** The collector's state in a few lines (also on the dashboard). */
export function CollectorFacts({ status, compact }: { status: StatusResponse; compact?: boolean }) {
  const f = fmt();
  const collector = status.collector;
  const tone = collector.collector === 'running' ? 'good' : collector.collector === 'error' ? 'bad' : 'warn';
  return (
    <div class="stack" data-testid="collector-facts">
      <div>
        <Badge tone={tone}>{tMaybe(`collector.${collector.collector}`) ?? collector.collector}</Badge>{' '}
        <span class="muted small">
          {t(`mode.${(['auto', 'subscribe', 'http', 'resp'] as const).find((mode) => mode === collector.mode) ?? 'auto'}`)}
          {collector.transport ? ` → ${collector.transport}` : ''}
        </span>
      </div>
      <dl class="detail-list">
        <dt>{t('system.lastConsumed')}</dt>
        <dd>{f.dateTime(collector.lastConsumedAt)}</dd>
        <dt>{t('system.lastInserted')}</dt>
        <dd>{f.dateTime(collector.lastInsertedAt)}</dd>
        <dt>{t('system.inserted')}</dt>
        <dd>
          {f.int(collector.totalInserted)} / {t('system.skipped', { count: f.int(collector.totalSkipped) })}
        </dd>
        {!compact && (
          <>
            <dt>{t('system.upstream')}</dt>
            <dd class="mono">{collector.upstream || '—'}</dd>
            <dt>{t('system.queue')}</dt>
            <dd class="mono">{collector.queue || '—'}</dd>
            <dt>{t('system.deadLetters')}</dt>
            <dd>{f.int(collector.deadLetters)}</dd>
          </>
        )}
      </dl>
      {collector.lastError && (
        <div class="error-note" role="status">
          <strong>{t('system.lastError')}</strong>
          <span class="error-detail mono">{collector.lastError}</span>
        </div>
      )}
      {!compact && (collector.warnings ?? []).map((warning) => <p class="banner warn" key={warning}>{warning}</p>)}
      {status.gaps?.open && <p class="banner warn">{t('system.gapOpen')}</p>}
    </div>
  );
}

function Diagnosis({ status }: { status: StatusResponse }) {
  const f = fmt();
  const diagnosis = status.diagnosis!;
  return (
    <div class="stack">
      <p>
        <Badge tone={diagnosis.ok ? 'good' : 'bad'}>{diagnosis.ok ? t('system.diagnosisOk') : t('system.diagnosisProblems')}</Badge>{' '}
        <span class="muted small">{t('system.checkedAt', { time: f.dateTime(diagnosis.checkedAtMs) })}</span>
      </p>
      {diagnosis.cpa && (
        <p class="small">
          {t('system.cpaReport', {
            url: diagnosis.cpa.url ?? '—',
            version: diagnosis.cpa.version ?? '—',
            reachable: diagnosis.cpa.reachable ? t('common.yes') : t('common.no'),
          })}
        </p>
      )}
      {diagnosis.findings.length === 0 ? (
        <p>{t('system.noFindings')}</p>
      ) : (
        <ul class="finding-list" data-testid="findings">
          {diagnosis.findings.map((finding) => (
            <li key={finding.code} class={`finding severity-${finding.severity}`}>
              <div class="finding-head">
                <Badge tone={finding.severity === 'error' ? 'bad' : finding.severity === 'warning' ? 'warn' : undefined}>{tMaybe(`severity.${finding.severity}`) ?? finding.severity}</Badge>
                <strong>{tMaybe(`finding.${finding.code}`) ?? finding.code}</strong>
              </div>
              <p>{finding.observed}</p>
              <p>
                <strong>{t('system.fix')}</strong> {finding.fix}
              </p>
              {(finding.hints ?? []).length > 0 && (
                <ul class="plain-list small">
                  {finding.hints!.map((hint) => (
                    <li key={hint}>{hint}</li>
                  ))}
                </ul>
              )}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function GapList({ status }: { status: StatusResponse }) {
  const f = fmt();
  const gaps = status.gaps?.recent ?? [];
  if (gaps.length === 0) return <p>{t('system.noGaps')}</p>;
  return (
    <ul class="plain-list small">
      {gaps.map((gap) => (
        <li key={gap.id}>
          {f.dateTime(gap.startMs)} → {gap.endMs ? f.dateTime(gap.endMs) : t('monitor.gapOpen')} · {f.duration(gap.durationMs)} · {tMaybe(`gap.${gap.cause}`) ?? gap.cause}
        </li>
      ))}
    </ul>
  );
}

function ConnectionForm({ config, onSaved }: { config: ManagerConfigResponse; onSaved: () => void }) {
  const current = config.config;
  const envManaged = config.source === 'env';
  const [url, setUrl] = useState(current.cpaConnection.cpaBaseUrl);
  const [key, setKey] = useState('');
  const [enabled, setEnabled] = useState(current.collector.enabled !== false);
  const [mode, setMode] = useState(current.collector.collectorMode ?? 'auto');
  const [poll, setPoll] = useState(String(current.collector.pollIntervalMs ?? 500));
  const [batch, setBatch] = useState(String(current.collector.batchSize ?? 100));
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    setUrl(current.cpaConnection.cpaBaseUrl);
    setEnabled(current.collector.enabled !== false);
  }, [config]);

  const save = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.saveConfig({
        cpaConnection: { cpaBaseUrl: normalizeBaseUrl(url), managementKey: key.trim() },
        collector: {
          enabled,
          collectorMode: mode,
          pollIntervalMs: Number(poll) || undefined,
          batchSize: Number(batch) || undefined,
          tlsSkipVerify: current.collector.tlsSkipVerify ?? false,
        },
      });
      setKey('');
      toast(t('system.saved'));
      onSaved();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="form" onSubmit={save} data-testid="connection-form">
      {envManaged && <p class="banner warn">{t('system.envManaged')}</p>}
      {current.cpaConnection.managementKeyNeedsReentry && <p class="banner warn">{t('system.keyNeedsReentry')}</p>}
      <div class="form-grid">
        <TextField label={t('setup.url')} value={url} onInput={setUrl} inputMode="url" />
        <TextField
          label={t('setup.managementKey')}
          type="password"
          value={key}
          onInput={setKey}
          autoComplete="off"
          hint={current.cpaConnection.managementKeySet ? t('system.keyKeep', { masked: current.cpaConnection.managementKey ?? '••••' }) : t('system.keyNone')}
        />
        <SelectField label={t('setup.mode')} value={mode} onChange={setMode} options={(['auto', 'subscribe', 'http', 'resp'] as const).map((value) => ({ value, label: t(`mode.${value}`) }))} />
        <TextField label={t('setup.poll')} value={poll} onInput={setPoll} inputMode="numeric" hint={config.cpaUsage ? t('system.retention', { seconds: config.cpaUsage.redisUsageQueueRetentionSeconds }) : undefined} />
        <TextField label={t('system.batchSize')} value={batch} onInput={setBatch} inputMode="numeric" />
      </div>
      <Checkbox label={t('setup.monitoring')} checked={enabled} onChange={setEnabled} hint={t('setup.monitoringHint')} />
      {config.cpaUsage && (
        <p class="small">
          {t('system.cpaUsage', {
            enabled: config.cpaUsage.usageStatisticsEnabled ? t('common.on') : t('common.off'),
            seconds: config.cpaUsage.redisUsageQueueRetentionSeconds,
          })}
        </p>
      )}
      <p class="muted small">{t('system.connectionRisk')}</p>
      {error !== null && <ErrorNote error={error} context="setup" />}
      <div class="form-actions">
        <button type="submit" class="button primary" disabled={busy || envManaged}>
          {busy ? t('common.checking') : t('common.save')}
        </button>
      </div>
    </form>
  );
}

function PreferencesCard() {
  const prefs = useStore(settings);
  const zones = useMemo(() => {
    try {
      return (Intl as unknown as { supportedValuesOf(kind: string): string[] }).supportedValuesOf('timeZone');
    } catch {
      return ['UTC'];
    }
  }, []);
  return (
    <Card title={t('system.preferences')}>
      <div class="stack">
        <SelectField
          label={t('system.timeZone')}
          value={prefs.timeZone}
          onChange={(timeZone) => updateSettings({ timeZone })}
          options={zones.map((zone) => ({ value: zone, label: zone }))}
          allLabel={t('system.browserZone', { zone: browserTimeZone() })}
          testId="timezone-select"
        />
        <button
          type="button"
          class="button"
          onClick={() => {
            for (const key of ['cpamp.monitor', 'cpamp.analytics']) storage.set(key, null);
            logOut();
          }}
        >
          {t('system.clearLocal')}
        </button>
      </div>
    </Card>
  );
}
