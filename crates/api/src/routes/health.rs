//! `GET /health`: liveness, no auth.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/health")
            .route(web::get().to(health))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::method_not_allowed())
            })),
    );
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ok": true, "service": "cpa-manager-plus" }))
}
