// How keys, credentials and accounts are named on screen.
import type { ApiKeyAlias, IdentityFields } from './types';

export type AliasMap = ReadonlyMap<string, string>;

export function aliasMap(items: readonly ApiKeyAlias[] | undefined): AliasMap {
  return new Map((items ?? []).map((item) => [item.apiKeyHash.toLowerCase(), item.alias]));
}

/**
 * A client API key: its alias when one is saved, else `sha256:` and the first 12 hex
 * characters of its hash (the raw key is never known to the panel).
 */
export function keyLabel(hash: string | undefined | null, aliases: AliasMap): string {
  const normalized = (hash ?? '').trim().toLowerCase();
  if (!normalized) return '—';
  const alias = aliases.get(normalized);
  if (alias) return alias;
  if (normalized.startsWith('unknown-client-api-key:')) return normalized;
  return `sha256:${normalized.slice(0, 12)}`;
}

/** An account or credential: the most human of its identity fields. */
export function identityLabel(fields: IdentityFields & { id?: string }): string {
  return (
    firstNonBlank(
      fields.auth_label_snapshot,
      fields.account_snapshot,
      fields.auth_file_snapshot,
      fields.source,
      fields.auth_index,
      fields.id,
    ) ?? '—'
  );
}

export function firstNonBlank(...values: (string | undefined | null)[]): string | undefined {
  for (const value of values) {
    if (value && value.trim() && value.trim() !== '-') return value.trim();
  }
  return undefined;
}

/** Hides the middle of an identifier (for screenshots and shoulder surfers). */
export function maskIdentifier(value: string): string {
  if (value.length <= 4) return '•'.repeat(value.length);
  const at = value.indexOf('@');
  if (at > 0) return `${value.slice(0, Math.min(2, at))}•••${value.slice(at)}`;
  const keep = Math.min(4, Math.floor(value.length / 4));
  return `${value.slice(0, keep)}•••${value.slice(-keep)}`;
}
