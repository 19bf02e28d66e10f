// The CPA base URL as the server will store it (server-core §3.7), shown before saving.

/**
 * Trims, adds `http://` when no scheme is given, strips trailing slashes, then one
 * trailing `/v0/management` and one trailing `/v0`.
 */
export function normalizeBaseUrl(input: string): string {
  let url = input.trim();
  if (!url) return '';
  if (!url.includes('://')) url = `http://${url}`;
  url = url.replace(/\/+$/, '');
  if (url.endsWith('/v0/management')) url = url.slice(0, -'/v0/management'.length);
  if (url.endsWith('/v0')) url = url.slice(0, -'/v0'.length);
  return url;
}
