// Export (with filters), resumable import with progress, and how to back up.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';

import { ApiError } from '../lib/api';
import { saveBlob } from '../lib/csv';
import { api } from '../lib/endpoints';
import { fmt } from '../lib/format';
import { t } from '../lib/i18n';
import { ImportRunner, type ImportApi, type Progress } from '../lib/importer';
import { keyLabel } from '../lib/labels';
import { useAliases } from '../lib/aliases';
import { useResource } from '../lib/resource';
import { activeTimeZone } from '../lib/settings';
import { exportQuery, filenameOf, type ExportForm } from '../lib/transfer';
import { DataTable } from '../components/Table';
import { Card, ErrorNote, Segmented, SelectField, Unavailable } from '../components/ui';
import { toast } from '../components/Toast';

export function TransferPage() {
  return (
    <div class="page" data-testid="page-transfer">
      <ExportCard />
      <ImportCard />
      <BackupCard />
    </div>
  );
}

function ExportCard() {
  const timeZone = activeTimeZone();
  const aliases = useAliases();
  const [form, setForm] = useState<ExportForm>({ range: 'all', model: '', apiKey: '', format: 'jsonl' });
  const [received, setReceived] = useState<number | null>(null);
  const [expected, setExpected] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [unavailable, setUnavailable] = useState(false);
  const controller = useRef<AbortController | null>(null);
  const options = useResource(`export-options:${timeZone}`, (signal) => {
    const now = Date.now();
    return api.analytics({ from_ms: 1, to_ms: now + 1, now_ms: now, time_zone: timeZone, include: { filter_selectors: true } }, signal);
  });
  const f = fmt();
  useEffect(() => () => controller.current?.abort(), []);
  // Whether this server exports at all: one event asked for, its type checked, the rest dropped.
  const probe = useResource('export-probe', async (signal) => {
    try {
      const response = await api.exportUsage({ limit: 1 }, signal);
      await response.body?.cancel();
      return /ndjson|jsonl|csv/i.test(response.headers.get('Content-Type') ?? '');
    } catch (failure) {
      if (failure instanceof ApiError && failure.unavailable) return false;
      throw failure;
    }
  });
  const offered = !unavailable && probe.data !== false;

  const run = async () => {
    setError(null);
    setReceived(0);
    controller.current = new AbortController();
    try {
      const response = await api.exportUsage(exportQuery(form, Date.now()), controller.current.signal);
      const type = response.headers.get('Content-Type') ?? '';
      if (!/ndjson|jsonl|csv/i.test(type)) {
        // An older server answers this path with the aggregate usage JSON, not an export.
        await response.body?.cancel();
        setUnavailable(true);
        setReceived(null);
        return;
      }
      const events = Number(response.headers.get('X-Usage-Export-Events'));
      setExpected(Number.isFinite(events) && response.headers.has('X-Usage-Export-Events') ? events : null);
      const parts: BlobPart[] = [];
      let total = 0;
      const reader = response.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        total += value.byteLength;
        setReceived(total);
      }
      const name = filenameOf(response.headers.get('Content-Disposition'), form.format === 'csv' ? 'usage-events.csv' : 'usage-events.jsonl');
      saveBlob(new Blob(parts, { type }), name);
      toast(t('transfer.exported', { size: f.bytes(total) }));
      setExpected(null);
    } catch (failure) {
      if (failure instanceof ApiError && failure.unavailable) setUnavailable(true);
      else if (!(failure instanceof DOMException && failure.name === 'AbortError')) setError(failure);
    } finally {
      controller.current = null;
      setReceived(null);
    }
  };

  const selectors = options.data?.filter_options;
  return (
    <Card title={t('transfer.exportTitle')} subtitle={t('transfer.exportHint')} class="span-full">
      {!offered ? (
        <Unavailable what={t('transfer.exportWhat')} />
      ) : (
        <div class="stack">
          <div class="toolbar">
            <Segmented<ExportForm['range']>
              label={t('range.label')}
              value={form.range}
              onChange={(range) => setForm({ ...form, range })}
              choices={(['all', '7d', '30d'] as const).map((value) => ({ value, label: t(`range.${value}`) }))}
            />
            <SelectField label={t('filters.model')} value={form.model} onChange={(model) => setForm({ ...form, model })} options={(selectors?.models ?? []).map((model) => ({ value: model, label: model }))} allLabel={t('filters.all')} />
            <SelectField
              label={t('filters.apiKey')}
              value={form.apiKey}
              onChange={(apiKey) => setForm({ ...form, apiKey })}
              options={(selectors?.api_key_hashes ?? []).map((hash) => ({ value: hash, label: keyLabel(hash, aliases) }))}
              allLabel={t('filters.all')}
            />
            <Segmented<ExportForm['format']>
              label={t('transfer.format')}
              value={form.format}
              onChange={(format) => setForm({ ...form, format })}
              choices={[
                { value: 'jsonl', label: 'NDJSON' },
                { value: 'csv', label: 'CSV' },
              ]}
            />
          </div>
          <div class="form-actions">
            <button type="button" class="button primary" onClick={run} disabled={received !== null} data-testid="export-run">
              {received !== null
                ? expected !== null
                  ? t('transfer.exportingEvents', { size: f.bytes(received), events: f.int(expected) })
                  : t('transfer.exporting', { size: f.bytes(received) })
                : t('transfer.export')}
            </button>
            {received !== null && (
              <button type="button" class="button" onClick={() => controller.current?.abort()}>
                {t('common.cancel')}
              </button>
            )}
          </div>
          {error !== null && <ErrorNote error={error} />}
        </div>
      )}
    </Card>
  );
}

const importApi: ImportApi = {
  create: api.createImportSession,
  get: api.importSession,
  chunk: api.uploadChunk,
  complete: api.completeImport,
  cancel: api.cancelImport,
};

function ImportCard() {
  const [file, setFile] = useState<File | null>(null);
  const [progress, setProgress] = useState<Progress | null>(null);
  const runner = useRef<ImportRunner | null>(null);
  const f = fmt();
  const unavailable = progress?.error instanceof ApiError && progress.error.unavailable && !progress.session;

  const start = () => {
    if (!file) return;
    if (!runner.current) runner.current = new ImportRunner(importApi, file, setProgress);
    void runner.current.start();
  };
  const choose = (chosen: File | null) => {
    runner.current?.pause();
    runner.current = null;
    setProgress(null);
    setFile(chosen);
  };
  const result = progress?.session?.result;
  const percent = progress && progress.totalBytes ? progress.sentBytes / progress.totalBytes : 0;
  const phase = progress?.phase ?? 'idle';
  const busy = phase === 'uploading' || phase === 'processing';

  return (
    <Card title={t('transfer.importTitle')} subtitle={t('transfer.importHint')}>
      {unavailable ? (
        <Unavailable what={t('transfer.importWhat')} />
      ) : (
        <div class="stack">
          <label class="field">
            <span>{t('transfer.file')}</span>
            <input type="file" accept=".json,.jsonl,.ndjson,.txt" onChange={(event) => choose(event.currentTarget.files?.[0] ?? null)} disabled={busy} data-testid="import-file" />
          </label>
          {file && (
            <p class="muted small">
              {file.name} · {f.bytes(file.size)}
            </p>
          )}
          {progress && (
            <div class="stack" aria-live="polite">
              <progress max={1} value={phase === 'processing' || phase === 'completed' ? 1 : percent} aria-label={t('transfer.progress')} />
              <span class="small">
                {t(`transfer.phase.${phase}`)} · {f.bytes(progress.sentBytes)} / {f.bytes(progress.totalBytes)}
              </span>
            </div>
          )}
          <div class="form-actions">
            {(phase === 'idle' || phase === 'paused' || phase === 'failed') && (
              <button type="button" class="button primary" disabled={!file} onClick={start} data-testid="import-start">
                {phase === 'paused' || (phase === 'failed' && progress?.session) ? t('transfer.resume') : t('transfer.import')}
              </button>
            )}
            {phase === 'uploading' && (
              <button type="button" class="button" onClick={() => runner.current?.pause()}>
                {t('transfer.pause')}
              </button>
            )}
            {(phase === 'uploading' || phase === 'paused' || phase === 'processing') && (
              <button type="button" class="button danger" onClick={() => void runner.current?.cancel()}>
                {t('common.cancel')}
              </button>
            )}
          </div>
          {progress?.error !== undefined && !unavailable && <ErrorNote error={progress.error} />}
          {result && (
            <dl class="detail-list" data-testid="import-result">
              <dt>{t('transfer.format')}</dt>
              <dd>{result.format}</dd>
              <dt>{t('transfer.added')}</dt>
              <dd>{f.int(result.added)}</dd>
              <dt>{t('transfer.skipped')}</dt>
              <dd>{f.int(result.skipped)}</dd>
              <dt>{t('transfer.failed')}</dt>
              <dd>{f.int(result.failed)}</dd>
              <dt>{t('transfer.unsupported')}</dt>
              <dd>{f.int(result.unsupported)}</dd>
              {result.warnings && result.warnings.length > 0 && (
                <>
                  <dt>{t('transfer.warnings')}</dt>
                  <dd>{result.warnings.join(', ')}</dd>
                </>
              )}
            </dl>
          )}
          {result?.errors && result.errors.length > 0 && (
            <details data-testid="import-errors">
              <summary>{t('transfer.errorList', { count: f.int(result.errors.length) })}</summary>
              <ul class="plain-list small mono">
                {result.errors.map((item, index) => (
                  <li key={index}>
                    {item.line !== undefined
                      ? t('transfer.atLine', { line: item.line })
                      : item.element !== undefined
                        ? t('transfer.atElement', { element: item.element })
                        : [item.endpoint, item.model, item.detail].filter((part) => part !== undefined).join(' › ')}
                    : {item.error}
                  </li>
                ))}
              </ul>
            </details>
          )}
        </div>
      )}
    </Card>
  );
}

function BackupCard() {
  const status = useResource('status', (signal) => api.status(signal));
  const backups = useResource('backups', (signal) => api.backups(signal));
  const [creating, setCreating] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const f = fmt();
  const dbPath = status.data?.dbPath;
  const dir = useMemo(() => (dbPath ? dbPath.replace(/[/\\][^/\\]*$/, '') : ''), [dbPath]);
  const unavailable = backups.error instanceof ApiError && backups.error.unavailable;

  const create = async () => {
    setCreating(true);
    setError(null);
    try {
      const manifest = await api.createBackup();
      toast(t('transfer.backupCreated', { name: manifest.name }));
      backups.reload();
    } catch (failure) {
      setError(failure);
    } finally {
      setCreating(false);
    }
  };
  const download = async (name: string, file: string) => {
    setError(null);
    try {
      const response = await api.backupFile(name, file);
      saveBlob(await response.blob(), `${name}-${file}`);
    } catch (failure) {
      setError(failure);
    }
  };
  const remove = async (name: string) => {
    setError(null);
    try {
      await api.deleteBackup(name);
      toast(t('transfer.backupDeleted', { name }));
      backups.reload();
    } catch (failure) {
      setError(failure);
    }
  };

  return (
    <Card
      title={t('transfer.backupTitle')}
      class="span-2"
      actions={
        !unavailable && (
          <button type="button" class="button primary" onClick={create} disabled={creating || backups.loading} data-testid="backup-create">
            {creating ? t('transfer.backupCreating') : t('transfer.backupCreate')}
          </button>
        )
      }
    >
      <div class="stack">
        {unavailable ? (
          <>
            <p>{t('transfer.backupBody')}</p>
            <ul class="plain-list mono">
              <li>usage.sqlite</li>
              <li>usage.sqlite-wal</li>
              <li>usage.sqlite-shm</li>
              <li>data.key</li>
            </ul>
          </>
        ) : (
          <p>{t('transfer.backupOnline', { dir: backups.data?.directory ?? '…' })}</p>
        )}
        {dir && <p class="small">{t('transfer.backupDir', { dir })}</p>}
        {error !== null && <ErrorNote error={error} />}
        {!unavailable && backups.data && (
          <DataTable
            label={t('transfer.backupTitle')}
            rows={backups.data.items}
            rowKey={(item) => item.name}
            empty={t('transfer.backupNone')}
            testId="backup-table"
            columns={[
              { key: 'name', header: t('transfer.backupName'), cell: (item) => <span class="mono">{item.name}</span> },
              { key: 'created', header: t('transfer.backupWhen'), cell: (item) => f.dateTime(item.created_at_ms) },
              { key: 'events', header: t('system.events'), numeric: true, cell: (item) => f.int(item.events) },
              { key: 'size', header: t('system.totalSize'), numeric: true, cell: (item) => f.bytes(item.files.reduce((sum, file) => sum + file.bytes, 0)) },
              { key: 'key', header: 'data.key', cell: (item) => t(`transfer.dataKey.${item.data_key}`) },
              {
                key: 'actions',
                header: t('prices.actions'),
                cell: (item) => (
                  <span class="row-actions">
                    {item.files.map((file) => (
                      <button type="button" class="button small" key={file.name} onClick={() => void download(item.name, file.name)}>
                        {file.name}
                      </button>
                    ))}
                    <button type="button" class="button small danger" onClick={() => void remove(item.name)}>
                      {t('common.delete')}
                    </button>
                  </span>
                ),
              },
            ]}
          />
        )}
        <p class="muted small">{t('transfer.backupKey')}</p>
      </div>
    </Card>
  );
}
