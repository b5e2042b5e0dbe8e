//! Per-request logging: method, path, status, latency and the number of database queries.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use std::time::Instant;

use actix_session::SessionExt;
use std::sync::Arc;

use super::{AppState, Identify, Identity, Visitor, SESSION_TOKEN};
use crate::db::QueryCounter;

pub async fn request_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let counter = QueryCounter::default();
    req.extensions_mut().insert(counter.clone());
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let send_count = req.app_data::<web::Data<AppState>>().is_some_and(|s| s.query_count_header);
    let mut response = next.call(req).await?;
    let queries = counter.get();
    // Labelled by route pattern (`/payments/{reference}`), never by path: bounded cardinality.
    let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".into());
    crate::metrics::metrics().http(&route, response.status().as_u16(), started.elapsed());
    if send_count {
        response.headers_mut().insert(HeaderName::from_static("x-db-queries"), HeaderValue::from(queries));
    }
    log::info!(
        "{method} {path} {} {:.1}ms queries={queries}",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(response)
}

/// Establishes who is signed in (a `Visitor` in the request's extensions) before any handler
/// runs, through the registered `Identify`. A token whose session is gone is dropped from the
/// cookie.
pub async fn identify(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let session = req.get_session();
    let token = session.get::<String>(SESSION_TOKEN).ok().flatten();
    let identifier = req.app_data::<web::Data<Arc<dyn Identify>>>().map(|i| i.get_ref().clone());
    let viewer = match (token, identifier) {
        (Some(token), Some(identifier)) => {
            let counter = req.extensions().get::<QueryCounter>().cloned().unwrap_or_default();
            match identifier.identify(token, counter).await {
                Identity::Known(viewer) => Some(viewer),
                Identity::Unknown => {
                    session.remove(SESSION_TOKEN);
                    // Said on the sign-in page this person meets next, so the ending is not silent.
                    super::flash(&session, "Your session has ended. Please sign in again.");
                    None
                }
                Identity::Unavailable(why) => {
                    log::warn!("could not read the session: {why}");
                    None
                }
            }
        }
        _ => None,
    };
    let signed_in = viewer.is_some();
    req.extensions_mut().insert(Visitor(viewer));
    let response = next.call(req).await?;
    // An error page was drawn without knowing who asked: draw it again in their own frame, so a
    // signed-in person is not shown as signed out.
    let redraw = signed_in
        .then(|| response.response().error().and_then(|e| e.as_error::<super::AppError>()).map(|e| e.page_with(super::Layout::new(response.request()))))
        .flatten();
    let mut response = match redraw {
        Some(page) => {
            let (request, _) = response.into_parts();
            ServiceResponse::new(request, page).map_into_boxed_body()
        }
        None => response.map_into_boxed_body(),
    };
    // A page made for someone signed in is theirs alone: no cache keeps it, so Back after
    // paying or after signing out asks the server again instead of showing a stale page.
    let html = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if signed_in && html {
        response.headers_mut().insert(actix_web::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}
