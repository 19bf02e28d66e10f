// Hash routing (`#/path?query`), so the single file works under any server path.
import { Store } from './store';

export interface Route {
  path: string;
  params: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const text = hash.replace(/^#/, '') || '/';
  const [rawPath, query = ''] = text.split('?', 2) as [string, string?];
  const path = '/' + rawPath.replace(/^\/+/, '').replace(/\/+$/, '');
  return { path, params: new URLSearchParams(query) };
}

export function routeHash(path: string, params?: Record<string, string | undefined>): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== '') query.set(name, value);
  }
  const text = query.toString();
  return `#${path}${text ? `?${text}` : ''}`;
}

export const route = new Store<Route>(parseHash(globalThis.location?.hash ?? ''));

globalThis.addEventListener?.('hashchange', () => route.set(parseHash(location.hash)));

export function navigate(path: string, params?: Record<string, string | undefined>, replace = false): void {
  const hash = routeHash(path, params);
  if (replace) history.replaceState(null, '', hash);
  else history.pushState(null, '', hash);
  route.set(parseHash(hash));
}
