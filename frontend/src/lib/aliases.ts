// API key aliases, loaded once and shared by every page that names a client key.
import { useEffect } from 'preact/hooks';

import { ApiError } from './api';
import { api } from './endpoints';
import { aliasMap, type AliasMap } from './labels';
import { Store, useStore } from './store';
import type { ApiKeyAlias } from './types';

export interface AliasState {
  map: AliasMap;
  items: ApiKeyAlias[];
  /** False when this server has no alias API. */
  available: boolean;
  loadedAt: number;
}

export const aliases = new Store<AliasState>({ map: new Map(), items: [], available: true, loadedAt: 0 });

let inFlight: Promise<void> | null = null;
const MAX_AGE_MS = 60_000;

/** Reloads the aliases unless a fresh copy is at hand (or `force`). */
export function loadAliases(force = false): Promise<void> {
  const state = aliases.get();
  // A server without the alias API is asked again only when forced (after a save).
  if (!force && (!state.available || Date.now() - state.loadedAt < MAX_AGE_MS)) return Promise.resolve();
  if (inFlight) return inFlight;
  inFlight = api
    .aliases()
    .then(
      (response) => aliases.set({ map: aliasMap(response.items), items: response.items ?? [], available: true, loadedAt: Date.now() }),
      (error: unknown) => {
        const unavailable = error instanceof ApiError && error.unavailable;
        aliases.set({ ...aliases.get(), available: !unavailable, loadedAt: Date.now() });
      },
    )
    .finally(() => {
      inFlight = null;
    });
  return inFlight;
}

/** The alias map; names fall back to hash prefixes until (or unless) aliases load. */
export function useAliases(): AliasMap {
  const state = useStore(aliases);
  useEffect(() => {
    void loadAliases();
  }, []);
  return state.map;
}
