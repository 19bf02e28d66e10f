//! The web panel: `/management.html` (no auth, any method) and `/` → 307 to it.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// The embedded single-file panel.
const PANEL_HTML: &str = include_str!("../../../../frontend/management.html");

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/management.html").to(panel))
        .service(web::resource("/").to(root));
}

async fn panel(panel_path: Option<web::Data<PanelPath>>) -> HttpResponse {
    if let Some(path) = panel_path.and_then(|path| path.0.clone())
        && let Ok(text) = tokio::fs::read_to_string(&path).await
    {
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(text);
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PANEL_HTML)
}

async fn root() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "/management.html"))
        .finish()
}

/// `PANEL_PATH`: serve this file instead of the embedded panel when it is readable.
#[derive(Debug, Clone, Default)]
pub struct PanelPath(pub Option<std::path::PathBuf>);
