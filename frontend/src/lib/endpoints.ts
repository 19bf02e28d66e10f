// One function per Manager API call the panel makes.
import { request, send } from './api';
import type {
  AnalyticsRequest,
  AnalyticsResponse,
  ApiKeyAlias,
  BackupManifest,
  CostExplanation,
  DashboardSummary,
  Gap,
  ImportSession,
  MaintenanceStatus,
  ManagerConfig,
  ManagerConfigResponse,
  PriceBook,
  PriceUsageSummary,
  ServiceInfo,
  SetupRequest,
  StatusResponse,
  SyncResult,
} from './types';

type Signal = AbortSignal | undefined;

export const api = {
  info: (signal?: Signal) => request<ServiceInfo>('/usage-service/info', { signal }),

  /** Checks an admin key: `/status` always needs it, before and after setup. */
  checkKey: (key: string, signal?: Signal) =>
    request<MaintenanceStatus>('/status', { key, query: { scope: 'database-maintenance' }, signal }),

  setup: (key: string, body: SetupRequest) =>
    request<{ ok: boolean; upstream: string }>('/setup', { method: 'POST', key, json: body }),

  config: (signal?: Signal) => request<ManagerConfigResponse>('/usage-service/config', { signal }),

  saveConfig: (config: Partial<ManagerConfig>) =>
    request<ManagerConfigResponse>('/usage-service/config', { method: 'PUT', json: { config } }),

  status: (signal?: Signal) => request<StatusResponse>('/status', { signal }),

  maintenance: (signal?: Signal) =>
    request<MaintenanceStatus>('/status', { query: { scope: 'database-maintenance' }, signal }),

  gaps: (startMs: number, endMs: number, signal?: Signal) =>
    request<{ gaps: Gap[] }>('/v0/management/collector-gaps', { query: { startMs, endMs, limit: 500 }, signal }),

  dashboard: (todayStartMs: number, nowMs: number, signal?: Signal) =>
    request<DashboardSummary>('/v0/management/dashboard/summary', {
      query: { today_start_ms: todayStartMs, now_ms: nowMs, top_models: 5, recent_failures: 5 },
      signal,
    }),

  analytics: (body: AnalyticsRequest, signal?: Signal) =>
    request<AnalyticsResponse>('/v0/management/monitoring/analytics', { method: 'POST', json: body, signal }),

  prices: (signal?: Signal) => request<{ prices: PriceBook }>('/v0/management/model-prices', { signal }),

  savePrices: (prices: PriceBook) =>
    request<{ prices: PriceBook }>('/v0/management/model-prices', { method: 'PUT', json: { prices } }),

  priceUsage: (signal?: Signal) =>
    request<PriceUsageSummary>('/v0/management/model-prices/usage-summary', { signal }),

  syncPrices: (models?: string[]) =>
    request<SyncResult>('/v0/management/model-prices/sync', {
      method: 'POST',
      json: models && models.length ? { models } : {},
    }),

  explainCost: (eventHash: string, signal?: Signal) =>
    request<CostExplanation>('/v0/management/model-prices/explain', { query: { event_hash: eventHash }, signal }),

  aliases: (signal?: Signal) => request<{ items: ApiKeyAlias[] }>('/v0/management/api-key-aliases', { signal }),

  saveAliases: (items: { apiKeyHash: string; alias: string }[]) =>
    request<{ items: ApiKeyAlias[] }>('/v0/management/api-key-aliases', { method: 'PUT', json: { items } }),

  deleteAlias: (hash: string) =>
    request<{ ok: boolean }>(`/v0/management/api-key-aliases/${encodeURIComponent(hash)}`, { method: 'DELETE' }),

  /** The raw export response (NDJSON or CSV); the caller streams it into a file. */
  exportUsage: (query: Record<string, string | number | undefined>, signal?: Signal) =>
    send('/v0/management/usage/export', { query, signal, headers: { Accept: 'application/x-ndjson, text/csv, */*' } }),

  createImportSession: (filename: string, sizeBytes: number, resumeKey: string) =>
    request<ImportSession>('/v0/management/usage/import-sessions', {
      method: 'POST',
      json: { filename, size_bytes: sizeBytes, resume_key: resumeKey },
    }),

  importSession: (id: string, signal?: Signal) =>
    request<ImportSession>(`/v0/management/usage/import-sessions/${id}`, { signal }),

  uploadChunk: (id: string, offset: number, chunk: Blob, signal?: Signal) =>
    request<ImportSession>(`/v0/management/usage/import-sessions/${id}/chunk`, {
      method: 'PUT',
      query: { offset },
      body: chunk,
      headers: { 'Content-Type': 'application/octet-stream' },
      signal,
    }),

  completeImport: (id: string) =>
    request<ImportSession>(`/v0/management/usage/import-sessions/${id}/complete`, { method: 'POST' }),

  backups: (signal?: Signal) =>
    request<{ directory: string; items: BackupManifest[] }>('/usage-service/backups', { signal }),

  createBackup: () => request<BackupManifest>('/usage-service/backups', { method: 'POST' }),

  deleteBackup: (name: string) =>
    request<{ deleted: string }>(`/usage-service/backups/${encodeURIComponent(name)}`, { method: 'DELETE' }),

  /** One file of a backup, as a download. */
  backupFile: (name: string, file: string, signal?: Signal) =>
    send(`/usage-service/backups/${encodeURIComponent(name)}/${encodeURIComponent(file)}`, { signal, headers: { Accept: '*/*' } }),

  cancelImport: (id: string) =>
    request<ImportSession>(`/v0/management/usage/import-sessions/${id}`, { method: 'DELETE' }),
};
