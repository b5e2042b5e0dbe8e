//! The payments as CSV, streamed, for the cookie or a bearer token.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::merchants::query::{parse_query, FILTER_PARAMS};
use crate::merchants::repo::{self, Keyset, PaymentRow};
use crate::merchants::service;
use super::*;
use crate::merchants::ids::CUSTOMER;
use crate::merchants::tokens::bearer;
use crate::web::{AppError, Db};

/// What a spreadsheet may read as the start of a formula (OWASP's list: `=`, `+`, `-`, `@`, tab
/// and carriage return).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A CSV cell: quoted when it must be, and defused when a spreadsheet would run it as a formula.
fn cell(raw: &str) -> String {
    let defused = if raw.starts_with(FORMULA_STARTS) { format!("'{raw}") } else { raw.to_string() };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

pub const CSV_HEADER: &str = "id,created,customer_id,customer_name,user_email,amount,currency,amount_refunded,status,transaction_id,description\n";
const CSV_BATCH: i64 = 2_000;

fn csv_line(p: &PaymentRow) -> String {
    let cells = [
        p.reference.to_string(),
        p.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        CUSTOMER.show(p.customer_public_id),
        p.customer_name.clone(),
        p.user_email.clone(),
        p.money().major(),
        p.currency.lower(),
        p.refunded().major(),
        p.state().to_string(),
        p.external_transaction_id.clone().unwrap_or_default(),
        p.description.clone().unwrap_or_default(),
    ];
    let mut line = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// Every matching payment, streamed: the rows are read in keyset batches on a blocking thread and
/// sent on as they come, so memory stays flat at any size. Signed in with the session cookie or a
/// bearer token; a script using a token is answered in the API's error object, a person in a page.
pub(super) async fn payments_csv(req: HttpRequest, db: Db, read: crate::web::ReadDb) -> Result<HttpResponse, AppError> {
    let viewer = crate::web::Viewer::of(&req);
    let scripted = viewer.is_none() && req.headers().contains_key(header::AUTHORIZATION);
    let refuse = |e: MerchantError| -> Result<HttpResponse, AppError> {
        if scripted {
            Ok(actix_web::ResponseError::error_response(&crate::merchants::error::ApiError::from(e)))
        } else {
            Err(e.into())
        }
    };
    let filter = match parse_query(req.query_string(), &FILTER_PARAMS).and_then(|q| q.payment_filter()) {
        Ok(filter) => filter,
        Err(e) => return refuse(MerchantError::Request(e)),
    };
    let visible = match viewer {
        Some(user) => {
            let linked = links_of(&db, user.id).await?;
            if let Err(e) = super::staff_only(&linked, user.is_admin) {
                return refuse(e);
            }
            linked
        }
        None if scripted => match bearer(&req).await {
            Ok((principal, _)) => principal.linked(),
            Err(e) => return Ok(actix_web::ResponseError::error_response(&e)),
        },
        None => return Err(AppError::LoginRequired { next: Some(req.uri().to_string()) }),
    };
    let scope = match service::visible_scope(&visible, &filter) {
        Ok(scope) => scope,
        Err(e) => return refuse(e),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    // The rows stream from the replica when there is one; who may see them was read above.
    let pool = read.pool().clone();
    std::thread::spawn(move || {
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(e) => {
                let _ = sender.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        if sender.blocking_send(Ok(web::Bytes::from_static(CSV_HEADER.as_bytes()))).is_err() {
            return;
        }
        let mut from = None;
        loop {
            let rows = match repo::payments_page(&mut conn, &scope, &filter, from, CSV_BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    log::error!("CSV export stopped: {e}");
                    let _ = sender.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            from = Some(Keyset::After(last.created_at, last.id));
            let chunk: String = rows.iter().map(csv_line).collect();
            // The reader went away: stop reading the database for nobody.
            if sender.blocking_send(Ok(web::Bytes::from(chunk))).is_err() || (rows.len() as i64) < CSV_BATCH {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"payments.csv\""))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for risky in ["+1", "-1", "@SUM(A1)", "\t=1+2", "\r=1+2"] {
            // Defused inside the quotes when the cell needs them (a carriage return does).
            assert!(cell(risky).trim_start_matches('"').starts_with('\''), "{risky}");
        }
    }
}
