//! The web panel: `/management.html` (no auth, any method) and `/` → 307 to it.
//!
//! The embedded panel is one self-contained file built from `frontend/` (see
//! ARCHITECTURE.md). It is sent with a Content-Security-Policy that allows exactly its
//! own inline script and stylesheet (by SHA-256) and requests to this origin, and with
//! an ETag so browsers revalidate instead of downloading it again. A file named by
//! `PANEL_PATH` is served as it is, without that policy: cpamp cannot know what a
//! foreign panel needs.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The embedded single-file panel (`cargo xtask frontend` writes it).
const PANEL_HTML: &str = include_str!("../../../../frontend/dist/management.html");

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/management.html").to(panel))
        .service(web::resource("/").to(root));
}

/// What is computed once about the embedded panel.
struct Embedded {
    etag: String,
    policy: String,
}

fn embedded() -> &'static Embedded {
    static EMBEDDED: OnceLock<Embedded> = OnceLock::new();
    EMBEDDED.get_or_init(|| Embedded {
        etag: format!("\"{}\"", hex(&Sha256::digest(PANEL_HTML.as_bytes())[..16])),
        policy: content_security_policy(PANEL_HTML),
    })
}

async fn panel(request: HttpRequest, panel_path: Option<web::Data<PanelPath>>) -> HttpResponse {
    if let Some(path) = panel_path.and_then(|path| path.0.clone())
        && let Ok(text) = tokio::fs::read_to_string(&path).await
    {
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(text);
    }
    let embedded = embedded();
    let matches = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == embedded.etag));
    let mut response = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, embedded.etag.clone()))
        .insert_header((header::CONTENT_SECURITY_POLICY, embedded.policy.clone()))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if matches {
        response.finish()
    } else {
        response.body(PANEL_HTML)
    }
}

async fn root() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "/management.html"))
        .finish()
}

/// `PANEL_PATH`: serve this file instead of the embedded panel when it is readable.
#[derive(Debug, Clone, Default)]
pub struct PanelPath(pub Option<std::path::PathBuf>);

/// A policy that admits the page's own inline `<script>` and `<style>` elements by hash
/// and nothing from elsewhere: no eval, no other origin, no framing.
fn content_security_policy(html: &str) -> String {
    let scripts = inline_hashes(html, "script");
    let styles = inline_hashes(html, "style");
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src 'self' data:; connect-src 'self'; \
         font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        sources(&scripts),
        sources(&styles)
    )
}

fn sources(hashes: &[String]) -> String {
    if hashes.is_empty() {
        "'none'".to_string()
    } else {
        hashes
            .iter()
            .map(|hash| format!("'sha256-{hash}'"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Base64 SHA-256 of the text inside every `<tag ...>…</tag>` element (inline content).
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut hashes = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after_name = &rest[start + open.len()..];
        // `<styles>` or `<scripts-x>` are other elements.
        if !after_name.starts_with(['>', ' ', '\t', '\n', '\r', '/']) {
            rest = after_name;
            continue;
        }
        let Some(tag_end) = after_name.find('>') else {
            break;
        };
        let body = &after_name[tag_end + 1..];
        let Some(end) = body.find(&close) else { break };
        let content = &body[..end];
        if !content.is_empty() {
            hashes.push(
                base64::engine::general_purpose::STANDARD
                    .encode(Sha256::digest(content.as_bytes())),
            );
        }
        rest = &body[end + close.len()..];
    }
    hashes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_cover_every_inline_block_and_skip_lookalikes() {
        let html = "<head><script type=\"module\">a()</script><style>p{}</style><styles>x</styles>\
                    <script src=\"x.js\"></script><style media=\"print\">q{}</style></head>";
        let scripts = inline_hashes(html, "script");
        let styles = inline_hashes(html, "style");
        let hash =
            |text: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text));
        assert_eq!(scripts, vec![hash("a()")]);
        assert_eq!(styles, vec![hash("p{}"), hash("q{}")]);
    }

    #[test]
    fn the_embedded_panel_policy_names_its_script_and_style() {
        let policy = &embedded().policy;
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        assert!(policy.contains("style-src 'sha256-"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
    }
}
