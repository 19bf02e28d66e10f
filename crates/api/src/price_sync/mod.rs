//! Fetching the price sources for `POST /v0/management/model-prices/sync`.
//!
//! Sources are asked in priority order (models.dev, LiteLLM, OpenRouter), each with
//! its own timeout, with `If-None-Match` when an earlier answer carried an `ETag`
//! (a `304` reuses that answer's parse). When requested models are given and every
//! one already has an automatic match, later sources are not asked. Deciding what
//! to save is `cpamp_domain::prices::sync`'s job; this module only fetches. Sources
//! are reached directly or through CPA's own proxy (`proxy`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cpamp_domain::prices::matching::Catalog;
use cpamp_domain::prices::source;
use cpamp_domain::prices::sources::{Canonical, ParsedSource, SourceEntry, parse};
use cpamp_domain::prices::sync::SourceOutcome;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::cpa_http::Target;

mod proxy;

pub use proxy::Route;

/// The public default URLs.
pub const MODELS_DEV_URL: &str = "https://models.dev/catalog.json";
/// LiteLLM's price and context-window table.
pub const LITELLM_URL: &str =
    "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json";
/// OpenRouter's model list with prices.
pub const OPENROUTER_URL: &str = "https://openrouter.ai/api/v1/models";

/// How long one source may take.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from a source.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

/// Where the sources are; `None` disables a source.
#[derive(Debug, Clone)]
pub struct SourceUrls {
    /// models.dev's catalog.
    pub models_dev: Option<String>,
    /// LiteLLM's price table.
    pub litellm: Option<String>,
    /// OpenRouter's model list.
    pub openrouter: Option<String>,
}

impl Default for SourceUrls {
    fn default() -> SourceUrls {
        SourceUrls {
            models_dev: Some(MODELS_DEV_URL.to_string()),
            litellm: Some(LITELLM_URL.to_string()),
            openrouter: Some(OPENROUTER_URL.to_string()),
        }
    }
}

struct Cached {
    url: String,
    etag: String,
    parsed: Arc<ParsedSource>,
}

/// The sources and the last answer of each (registered as `web::Data<PriceSync>`).
pub struct PriceSync {
    sources: Vec<(&'static str, Option<String>)>,
    timeout: Duration,
    cache: Mutex<HashMap<&'static str, Cached>>,
    /// One sync at a time: two concurrent syncs would race on the same rows.
    pub(crate) running: tokio::sync::Mutex<()>,
}

/// Every source's answer, merged.
pub struct Fetched {
    /// The prices found, merged over the sources.
    pub catalog: Catalog,
    /// How each source went, in source order.
    pub outcomes: Vec<SourceOutcome>,
    /// Sources that answered, in order.
    pub succeeded: Vec<String>,
    /// Entries without a usable price, over the sources that answered.
    pub skipped: usize,
}

impl PriceSync {
    /// Sources at `urls`, each allowed `SOURCE_TIMEOUT`.
    pub fn new(urls: SourceUrls) -> PriceSync {
        PriceSync::with_timeout(urls, SOURCE_TIMEOUT)
    }

    /// Sources at `urls`, each allowed `timeout`.
    pub fn with_timeout(urls: SourceUrls, timeout: Duration) -> PriceSync {
        PriceSync {
            sources: vec![
                (source::MODELS_DEV, urls.models_dev),
                (source::LITELLM, urls.litellm),
                (source::OPENROUTER, urls.openrouter),
            ],
            timeout,
            cache: Mutex::new(HashMap::new()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Asks the sources in order over `route`; stops early once `models` are all matched.
    pub async fn fetch(&self, models: &[String], now_ms: i64, route: &Route) -> Fetched {
        let mut entries: Vec<SourceEntry> = Vec::new();
        let mut canonical = Canonical::default();
        let mut outcomes = Vec::new();
        let mut succeeded = Vec::new();
        let mut skipped = 0;
        for (name, url) in &self.sources {
            let mut outcome = SourceOutcome {
                source: (*name).to_string(),
                ..SourceOutcome::default()
            };
            let Some(url) = url else {
                outcome.error = Some("disabled by configuration".to_string());
                outcomes.push(outcome);
                continue;
            };
            match self.fetch_one(name, url, now_ms, route).await {
                Ok(parsed) => {
                    outcome.models = parsed.entries.len();
                    outcome.skipped = parsed.skipped;
                    skipped += parsed.skipped;
                    canonical.merge(&parsed.canonical);
                    entries.extend(parsed.entries.iter().cloned());
                    succeeded.push((*name).to_string());
                }
                Err(error) => {
                    tracing::warn!(source = name, %error, "price source failed");
                    outcome.error = Some(error);
                }
            }
            outcomes.push(outcome);
            if !models.is_empty() && !succeeded.is_empty() {
                let catalog = Catalog::new(entries.clone(), canonical.clone());
                if catalog.covers(models) {
                    break;
                }
            }
        }
        Fetched {
            catalog: Catalog::new(entries, canonical),
            outcomes,
            succeeded,
            skipped,
        }
    }

    async fn fetch_one(
        &self,
        name: &'static str,
        url: &str,
        now_ms: i64,
        route: &Route,
    ) -> Result<Arc<ParsedSource>, String> {
        let etag = self.cached(name, url).map(|(etag, _)| etag);
        let reply = match tokio::time::timeout(self.timeout, get(url, etag.as_deref(), route)).await
        {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(format!(
                    "GET {url}: no answer within {} s",
                    self.timeout.as_secs()
                ));
            }
        };
        if reply.status == StatusCode::NOT_MODIFIED {
            return self
                .cached(name, url)
                .map(|(_, parsed)| parsed)
                .ok_or_else(|| format!("GET {url}: 304 Not Modified without an earlier answer"));
        }
        if !reply.status.is_success() {
            return Err(format!("GET {url}: HTTP {}", reply.status));
        }
        let parsed = Arc::new(parse(name, &reply.body, now_ms).map_err(|error| error.to_string())?);
        if let Ok(mut cache) = self.cache.lock() {
            match reply.etag {
                Some(etag) => {
                    cache.insert(
                        name,
                        Cached {
                            url: url.to_string(),
                            etag,
                            parsed: Arc::clone(&parsed),
                        },
                    );
                }
                None => {
                    cache.remove(name);
                }
            }
        }
        Ok(parsed)
    }

    fn cached(&self, name: &str, url: &str) -> Option<(String, Arc<ParsedSource>)> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(name)
            .filter(|cached| cached.url == url)
            .map(|cached| (cached.etag.clone(), Arc::clone(&cached.parsed)))
    }
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    body: Bytes,
}

/// `GET url` over `route` with redirects followed, the body read up to [`MAX_BODY_BYTES`].
async fn get(url: &str, etag: Option<&str>, route: &Route) -> Result<Reply, String> {
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("invalid source URL {url:?}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(format!("invalid source URL {url:?}"));
        };
        let target = Target::parse(&format!("{scheme}://{authority}"))
            .map_err(|_| format!("invalid source URL {url:?}"))?;
        let io = route
            .open(&target)
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        let mut request = Request::get(path)
            .header(http::header::HOST, target.host_header())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("cpamp/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(etag) = etag {
            request = request.header(http::header::IF_NONE_MATCH, etag);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| format!("GET {url}: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| format!("GET {url}: HTTP {status} without a Location"))?;
            url = resolve(&uri, location);
            continue;
        }
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty());
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|error| format!("GET {url}: read body: {error}"))?
            .to_bytes();
        return Ok(Reply { status, etag, body });
    }
    Err(format!("GET {url}: more than {MAX_REDIRECTS} redirects"))
}

/// A redirect target, absolute or relative to `base`.
fn resolve(base: &http::Uri, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |authority| authority.as_str());
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let directory = &path[..path.rfind('/').map_or(0, |index| index + 1)];
        format!("{scheme}://{authority}{directory}{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_request() {
        let base: http::Uri = "https://example.com/a/b.json".parse().expect("uri");
        assert_eq!(resolve(&base, "/c.json"), "https://example.com/c.json");
        assert_eq!(resolve(&base, "c.json"), "https://example.com/a/c.json");
        assert_eq!(resolve(&base, "http://other/x"), "http://other/x");
    }
}
