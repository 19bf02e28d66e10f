// Export request parameters and download file names.
import { DAY_MS } from './time';

export interface ExportForm {
  range: 'all' | '7d' | '30d';
  model: string;
  apiKey: string;
  format: 'jsonl' | 'csv';
}

/** Query parameters of `GET /v0/management/usage/export`; no parameter means "everything". */
export function exportQuery(form: ExportForm, nowMs: number): Record<string, string | number | undefined> {
  const days = form.range === '7d' ? 7 : form.range === '30d' ? 30 : 0;
  return {
    from_ms: days ? nowMs - days * DAY_MS : undefined,
    to_ms: days ? nowMs + 1 : undefined,
    model: form.model || undefined,
    api_key_hash: form.apiKey || undefined,
    format: form.format === 'csv' ? 'csv' : undefined,
  };
}

/** The file name from a `Content-Disposition` header, else `fallback`. */
export function filenameOf(disposition: string | null, fallback: string): string {
  const match = /filename\*?=(?:UTF-8''|")?([^";]+)"?/i.exec(disposition ?? '');
  if (!match) return fallback;
  try {
    const name = decodeURIComponent(match[1]!.trim());
    return name.replace(/[/\\]/g, '_') || fallback;
  } catch {
    return fallback;
  }
}
