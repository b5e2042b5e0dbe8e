//! The merchants' dashboard: server-rendered pages, usable without JavaScript, every filter in the
//! URL (a view can be bookmarked and shared), the same visibility as the API — what the user's
//! links do not reach is "not found".

use actix_session::Session;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use askama::Template;
use bigdecimal::BigDecimal;
use chrono::{Datelike, Duration as ChronoDuration, NaiveDate};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

use super::api::error::ApiError;
use super::api::handlers::{payments_page, start_refund, visible_scope};
use super::api::input::{parse_query, FILTER_PARAMS};
use super::api::ApiUser;
use super::domain::{major, Cursor, PaymentFilter};
use super::jobs::refund_job;
use super::repo::{self, DailyVolume, Keyset, PaymentRow};
use super::{MerchantsState, MerchantError};
use crate::auth::CurrentUser;
use crate::jobs;
use crate::payments::domain::{format_money, Amount};
use crate::payments::refunds::{self, NewRefund, Refund, RefundReason};
use crate::payments::{repo as payments, PaymentEvent};
use crate::web::{csrf, html, see_other, see_other_with_notice, AppError, Db, Layout};

type State = web::Data<MerchantsState>;

fn bad_filter(e: ApiError) -> AppError {
    if e.status.as_u16() == 404 {
        AppError::NotFound
    } else {
        AppError::BadRequest(e.message)
    }
}

async fn links_of(db: &Db, user_id: i64) -> Result<Vec<i64>, AppError> {
    db.run(move |conn| repo::links(conn, user_id)).await
}

/// A URL's query with one parameter set (or removed), the rest kept in order.
fn with_param(query: &str, name: &str, value: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.retain(|(n, v)| n != name && !v.is_empty());
    if let Some(value) = value {
        pairs.push((name.to_string(), value.to_string()));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

// --- the payments table -------------------------------------------------------------------------

pub struct Row {
    pub reference: String,
    pub created: String,
    pub customer: String,
    pub user: String,
    pub amount: String,
    pub refunded: String,
    pub status: String,
}

impl From<&PaymentRow> for Row {
    fn from(p: &PaymentRow) -> Row {
        Row {
            reference: p.reference.to_string(),
            created: p.created_at.format("%Y-%m-%d %H:%M").to_string(),
            customer: p.customer_name.clone(),
            user: p.user_email.clone(),
            amount: format_money(&p.amount, &p.currency),
            refunded: if p.amount_refunded > 0 { format_money(&p.amount_refunded, &p.currency) } else { String::new() },
            status: p.status.to_string(),
        }
    }
}

pub struct Total {
    pub currency: String,
    pub count: i64,
    pub sum: String,
}

/// One bar of the daily-volume chart, laid out on the server.
pub struct Bar {
    pub x: usize,
    pub y: i64,
    pub height: i64,
    pub day: String,
    pub label: String,
}

pub struct Chart {
    pub currency: String,
    pub bars: Vec<Bar>,
    pub width: usize,
    pub max: String,
}

pub struct Preset {
    pub label: &'static str,
    pub url: String,
}

pub struct Option_ {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct Suspect {
    pub first: String,
    pub second: String,
    pub amount: String,
    /// The whole amount in major units, for the one-click refund.
    pub refund: String,
    /// Minted at render: a double click refunds once.
    pub key: String,
    pub apart: String,
}

#[derive(Template)]
#[template(path = "dashboard_payments.html")]
struct PaymentsPage {
    layout: Layout,
    rows: Vec<Row>,
    totals: Vec<Total>,
    charts: Vec<Chart>,
    presets: Vec<Preset>,
    customers: Vec<Option_>,
    statuses: Vec<Option_>,
    form: BTreeMap<&'static str, String>,
    newer: Option<String>,
    older: Option<String>,
    csv: String,
    check: Option<repo::InvariantCheck>,
    suspects: Vec<Suspect>,
}

const CHART_HEIGHT: i64 = 120;
const CHART_WIDTH: usize = 620;

fn charts(volume: &[DailyVolume], filter: &PaymentFilter, today: NaiveDate) -> Vec<Chart> {
    let last = filter.created_before.map(|t| (t - ChronoDuration::seconds(1)).date_naive()).unwrap_or(today).min(today);
    let first = filter.created_from.map(|t| t.date_naive()).unwrap_or(last - ChronoDuration::days(29)).max(last - ChronoDuration::days(89));
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    let mut currencies: Vec<&str> = volume.iter().map(|v| v.currency.as_str()).collect();
    currencies.dedup();
    currencies.sort_unstable();
    currencies.dedup();
    currencies
        .into_iter()
        .map(|currency| {
            let sums: Vec<(NaiveDate, BigDecimal)> = days
                .iter()
                .map(|d| (*d, volume.iter().filter(|v| v.day == *d && v.currency == currency).map(|v| v.total.clone()).sum()))
                .collect();
            let max = sums.iter().map(|(_, s)| s.clone()).max().unwrap_or_default();
            let step = CHART_WIDTH / days.len().max(1);
            let bars = sums
                .iter()
                .enumerate()
                .map(|(i, (day, sum))| {
                    let height = if max > 0 {
                        use bigdecimal::ToPrimitive;
                        ((sum * BigDecimal::from(CHART_HEIGHT)) / &max).to_i64().unwrap_or(0)
                    } else {
                        0
                    };
                    Bar { x: i * step, y: CHART_HEIGHT - height, height, day: day.to_string(), label: format_money(sum, currency) }
                })
                .collect();
            Chart { currency: currency.to_string(), bars, width: step.saturating_sub(1).max(1), max: format_money(&max, currency) }
        })
        .collect()
}

fn presets(today: NaiveDate) -> Vec<Preset> {
    let range = |label, from: NaiveDate| Preset { label, url: format!("/dashboard/payments?from={from}&to={today}") };
    vec![
        range("Today", today),
        range("Last 7 days", today - ChronoDuration::days(6)),
        range("Last 30 days", today - ChronoDuration::days(29)),
        range("This month", today.with_day(1).unwrap_or(today)),
        Preset { label: "All time", url: "/dashboard/payments?limit=50".into() },
    ]
}

async fn payments_index(req: HttpRequest, user: CurrentUser, db: Db, state: State) -> Result<HttpResponse, AppError> {
    // The bare page shows the last 30 days, with the range in the URL: the totals and the chart
    // add up the whole filtered set, which at a million payments costs ~300 ms for a year and
    // ~27 ms for a month (bench/merchants.md). "All time" is one click away.
    if req.query_string().is_empty() {
        let today = state.clock.now().date_naive();
        return Ok(see_other(&format!("/dashboard/payments?from={}&to={today}", today - ChronoDuration::days(29))));
    }
    let query = parse_query(req.query_string(), &[&super::api::input::LIST_PARAMS[..], &FILTER_PARAMS[..]].concat()).map_err(bad_filter)?;
    let params = query.list(50).map_err(bad_filter)?;
    let filter = query.payment_filter().map_err(bad_filter)?;
    let backwards = matches!(params.cursor, Some(Cursor::Before(_)));
    let chart_filter = filter.clone();
    let user_id = user.0.id;
    let now = state.clock.now();
    let today = state.clock.now().date_naive();
    let (visible, names, rows, has_more, volume, check, suspects) = db
        .run(move |conn| {
            let visible = repo::links(conn, user_id)?;
            let scope = visible_scope(&visible, &filter).map_err(|e| MerchantError::from_api(&e))?;
            let (rows, has_more) = payments_page(conn, &visible, &filter, &params).map_err(|e| MerchantError::from_api(&e))?;
            let volume = repo::daily_volume(conn, &scope, &filter)?;
            let names: Vec<(i64, String)> = repo::customers(conn, &visible)?.into_iter().map(|c| (c.id, c.name)).collect();
            let check = repo::last_check(conn)?;
            let suspects = repo::double_charges(conn, &scope, 5, now - ChronoDuration::days(7))?;
            Ok::<_, MerchantError>((visible, names, rows, has_more, volume, check, suspects))
        })
        .await?;
    let _ = visible;
    let raw = req.query_string();
    let (newer_exists, older_exists) = match (backwards, query.get("starting_after").is_some()) {
        (true, _) => (has_more, true),
        (false, after) => (after, has_more),
    };
    let cursor_link = |name: &str, id: &str| {
        let without = with_param(&with_param(raw, "starting_after", None), "ending_before", None);
        format!("/dashboard/payments?{}", with_param(&without, name, Some(id)))
    };
    let newer = newer_exists.then(|| rows.first().map(|r| cursor_link("ending_before", &r.reference.to_string()))).flatten();
    let older = older_exists.then(|| rows.last().map(|r| cursor_link("starting_after", &r.reference.to_string()))).flatten();
    let mut totals: BTreeMap<String, (i64, BigDecimal)> = BTreeMap::new();
    for v in &volume {
        let entry = totals.entry(v.currency.clone()).or_default();
        entry.0 += v.count;
        entry.1 += &v.total;
    }
    let form: BTreeMap<&'static str, String> =
        FILTER_PARAMS.iter().map(|name| (*name, query.get(name).unwrap_or_default().to_string())).collect();
    let selected_customer = query.get("customer").unwrap_or_default().to_string();
    let selected_status = query.get("status").unwrap_or_default().to_string();
    let csv_query = with_param(&with_param(&with_param(raw, "starting_after", None), "ending_before", None), "limit", None);
    let page = PaymentsPage {
        layout: Layout::new(&req),
        rows: rows.iter().map(Row::from).collect(),
        totals: totals.into_iter().map(|(currency, (count, sum))| Total { sum: format_money(&sum, &currency), currency, count }).collect(),
        charts: charts(&volume, &chart_filter, today),
        presets: presets(today),
        customers: names
            .into_iter()
            .map(|(id, name)| Option_ { selected: id.to_string() == selected_customer, value: id.to_string(), label: name })
            .collect(),
        statuses: ["pending", "processing", "completed", "failed", "requires_confirmation"]
            .into_iter()
            .map(|s| Option_ { value: s.into(), label: s.replace('_', " "), selected: s == selected_status })
            .collect(),
        form,
        newer,
        older,
        csv: format!("/dashboard/payments.csv?{csv_query}"),
        check,
        suspects: suspects
            .into_iter()
            .map(|d| Suspect {
                amount: format_money(&d.amount, &d.currency),
                refund: major(&d.amount),
                key: Uuid::new_v4().to_string(),
                apart: format!("{} s apart", d.apart_seconds),
                first: d.first.to_string(),
                second: d.second.to_string(),
            })
            .collect(),
    };
    let mut response = html(page)?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

impl MerchantError {
    /// A parameter complaint from the shared parsing, for the pages.
    fn from_api(e: &ApiError) -> MerchantError {
        if e.status.as_u16() == 404 {
            MerchantError::NotFound("customer")
        } else {
            MerchantError::BadInput(e.message.clone())
        }
    }
}

// --- CSV ----------------------------------------------------------------------------------------

/// A CSV cell: quoted when it must be, and defused when a spreadsheet would run it as a formula.
fn cell(raw: &str) -> String {
    let defused = if raw.starts_with(['=', '+', '-', '@']) { format!("'{raw}") } else { raw.to_string() };
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
        p.customer_id.to_string(),
        p.customer_name.clone(),
        p.user_email.clone(),
        major(&p.amount),
        p.currency.to_ascii_lowercase(),
        major(&p.amount_refunded),
        p.status.to_string(),
        p.external_transaction_id.clone().unwrap_or_default(),
        p.description.clone().unwrap_or_default(),
    ];
    let mut line = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// Every matching payment, streamed: the rows are read in keyset batches on a blocking thread and
/// sent on as they come, so memory stays flat at any size. Signed in with the session cookie or a
/// bearer token.
async fn payments_csv(req: HttpRequest, db: Db, pool: web::Data<crate::db::PgPool>) -> Result<HttpResponse, AppError> {
    let query = parse_query(req.query_string(), &FILTER_PARAMS).map_err(bad_filter)?;
    let filter = query.payment_filter().map_err(bad_filter)?;
    let visible = match crate::web::Viewer::of(&req) {
        Some(user) => links_of(&db, user.id).await?,
        None if req.headers().contains_key(header::AUTHORIZATION) => match ApiUser::extract(&req).await {
            Ok(user) => user.principal.customers,
            Err(e) => return Ok(actix_web::ResponseError::error_response(&e)),
        },
        None => return Err(AppError::LoginRequired { next: Some(req.uri().to_string()) }),
    };
    let scope = visible_scope(&visible, &filter).map_err(bad_filter)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    let pool = pool.get_ref().clone();
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

// --- one payment --------------------------------------------------------------------------------

pub struct RefundView {
    pub reference: String,
    pub amount: String,
    pub status: String,
    pub reason: String,
    pub created: String,
    pub problem: Option<String>,
    pub stuck: bool,
}

#[derive(Template)]
#[template(path = "dashboard_payment.html")]
struct PaymentPage {
    layout: Layout,
    payment: Row,
    currency: String,
    description: String,
    transaction: String,
    failure: Option<String>,
    events: Vec<PaymentEvent>,
    refunds: Vec<RefundView>,
    refundable: bool,
    /// The payment's outcome is open and nothing is working on it: offer replay and settling.
    stuck: bool,
    remaining: String,
    idempotency_key: String,
}

fn refund_view(r: &Refund, stuck: bool) -> RefundView {
    RefundView {
        reference: r.reference.to_string(),
        amount: format_money(&r.amount, &r.currency),
        status: r.status.clone(),
        reason: r.reason.clone().unwrap_or_default().replace('_', " "),
        created: r.created_at.format("%Y-%m-%d %H:%M").to_string(),
        problem: r.failure_message.clone(),
        stuck,
    }
}

fn parse_reference(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound)
}

/// A visible payment, or not found.
async fn visible_payment(db: &Db, user_id: i64, reference: Uuid) -> Result<(Vec<i64>, PaymentRow), AppError> {
    db.run(move |conn| {
        let visible = repo::links(conn, user_id)?;
        let payment = repo::payment(conn, &visible, reference)?.ok_or(MerchantError::NotFound("payment"))?;
        Ok::<_, MerchantError>((visible, payment))
    })
    .await
}

async fn payment_detail(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let reference = parse_reference(&path)?;
    let (_, payment) = visible_payment(&db, user.0.id, reference).await?;
    let payment_id = payment.id;
    let order_id = payment.order_id;
    let (events, refunds, dead) = db
        .run(move |conn| {
            let refunds = refunds::for_payment(conn, payment_id)?;
            let mut keys: Vec<String> = refunds.iter().map(|r| format!("{}:{}", super::jobs::REFUND_PAYMENT, r.id)).collect();
            keys.push(format!("{}:{order_id}", crate::orders::pipeline::CHARGE_ORDER));
            let dead = jobs::dead_unique_keys(conn, &keys)?;
            Ok::<_, diesel::result::Error>((payments::events(conn, payment_id)?, refunds, dead))
        })
        .await?;
    use crate::payments::PaymentStatus as S;
    let charge_dead = dead.contains(&format!("{}:{order_id}", crate::orders::pipeline::CHARGE_ORDER));
    let stuck = payment.status == S::RequiresConfirmation || (charge_dead && matches!(payment.status, S::Pending) || (charge_dead && payment.status == S::Failed && payment.retryable));
    let remaining = payment.remaining();
    let page = PaymentPage {
        layout: Layout::new(&req),
        refundable: payment.status == crate::payments::PaymentStatus::Completed && remaining > 0,
        stuck,
        remaining: major(&remaining),
        currency: payment.currency.clone(),
        description: payment.description.clone().unwrap_or_default(),
        transaction: payment.external_transaction_id.clone().unwrap_or_default(),
        failure: (payment.status == crate::payments::PaymentStatus::Failed).then(|| payment.error_message.clone()).flatten(),
        payment: Row::from(&payment),
        events,
        refunds: refunds
            .iter()
            .map(|r| refund_view(r, r.status == refunds::PENDING && dead.contains(&format!("{}:{}", super::jobs::REFUND_PAYMENT, r.id))))
            .collect(),
        idempotency_key: Uuid::new_v4().to_string(),
    };
    let mut response = html(page)?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
struct RefundForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
    /// Absent: show the confirmation step; `yes`: make the refund.
    #[serde(default)]
    confirm: String,
}

#[derive(Template)]
#[template(path = "dashboard_refund_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    payment: Row,
    reference: String,
    amount: String,
    amount_shown: String,
    reason: String,
    idempotency_key: String,
    problem: Option<String>,
}

async fn refund(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: State,
    path: web::Path<String>,
    form: web::Form<RefundForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let reference = parse_reference(&path)?;
    let (_, payment) = visible_payment(&db, user.0.id, reference).await?;
    let form = form.into_inner();
    let key_ok = !form.idempotency_key.is_empty() && form.idempotency_key.len() <= 100 && form.idempotency_key.bytes().all(|b| b.is_ascii_graphic());
    let amount = form.amount.trim().parse::<Amount>();
    let reason = if form.reason.is_empty() { Ok(None) } else { RefundReason::parse(&form.reason).map(Some).ok_or(()) };
    let problem = match (&amount, &reason, key_ok) {
        (_, _, false) => Some("The form is missing its key; reload the payment and try again.".to_string()),
        (Err(e), _, _) => Some(format!("Amount: {e}.")),
        (_, Err(()), _) => Some("Choose a reason from the list.".to_string()),
        // Only while reviewing: on confirmation the reservation decides, and a second click of a
        // full refund must find the refund the first one made, not "nothing remains".
        (Ok(a), _, _) if form.confirm != "yes" && a.as_decimal() > &payment.remaining() => {
            Some(format!("At most {} remains to refund.", format_money(&payment.remaining(), &payment.currency)))
        }
        _ => None,
    };
    if problem.is_some() || form.confirm != "yes" {
        let status = if problem.is_some() { actix_web::http::StatusCode::BAD_REQUEST } else { actix_web::http::StatusCode::OK };
        let page = ConfirmPage {
            layout: Layout::new(&req),
            amount_shown: amount.as_ref().map(|a| format_money(a.as_decimal(), &payment.currency)).unwrap_or_default(),
            payment: Row::from(&payment),
            reference: reference.to_string(),
            amount: form.amount.trim().to_string(),
            reason: form.reason,
            idempotency_key: form.idempotency_key,
            problem,
        };
        let mut response = html(page)?;
        *response.status_mut() = status;
        return Ok(response);
    }
    let (user_id, attempts, now) = (user.0.id, state.refund_attempts, state.clock.now());
    let request = NewRefund {
        payment_id: payment.id,
        user_id,
        amount: amount.ok(),
        reason: reason.ok().flatten(),
        idempotency_key: format!("dashboard:{user_id}:{}", form.idempotency_key),
    };
    let made = db.run(move |conn| diesel::Connection::transaction(conn, |conn| start_refund(conn, payment.id, request, attempts, now))).await;
    let notice = match made {
        Ok(refund) => {
            state.wake.notify();
            format!("Refund of {} requested.", format_money(&refund.amount, &refund.currency))
        }
        Err(AppError::BadRequest(why)) => why,
        Err(other) => return Err(other),
    };
    Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{reference}"), &notice))
}

#[derive(Deserialize)]
struct SettleForm {
    #[serde(default)]
    csrf_token: String,
    /// `replay`, `succeeded` or `failed`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    gateway_id: String,
    #[serde(default)]
    note: String,
}

impl SettleForm {
    /// The operator's note: required to settle by hand (with the gateway's id when it succeeded).
    fn checked_note(&self) -> Result<String, AppError> {
        let note = self.note.trim().to_string();
        if self.action != "replay" && note.is_empty() {
            return Err(AppError::BadRequest("Settling by hand needs a note saying what the gateway told you.".into()));
        }
        if self.action == "succeeded" && self.gateway_id.trim().is_empty() {
            return Err(AppError::BadRequest("Settling as done needs the gateway's id for it.".into()));
        }
        Ok(note)
    }
}

/// A refund whose job died: sent again under the same gateway key (the gateway cannot make it
/// twice), or settled by hand with a written note — both go to the audit log.
async fn settle_refund(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: State,
    path: web::Path<(String, String)>,
    form: web::Form<SettleForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (payment_ref, refund_ref) = (parse_reference(&path.0)?, parse_reference(&path.1)?);
    let (visible, payment) = visible_payment(&db, user.0.id, payment_ref).await?;
    let form = form.into_inner();
    let note = form.checked_note()?;
    let (user_id, now, attempts) = (user.0.id, state.clock.now(), state.refund_attempts);
    let message = db
        .run(move |conn| {
            let refund = repo::refund_by_reference(conn, &visible, refund_ref)?.filter(|r| r.payment_id == payment.id);
            let refund = refund.ok_or(MerchantError::NotFound("refund"))?;
            let subject = format!("refund {}", refund.reference);
            let message = match form.action.as_str() {
                "replay" => {
                    jobs::enqueue(conn, &refund_job(refund.id, attempts), now)?;
                    repo::audit(conn, Some(user_id), "replay_refund", &subject, &note)?;
                    "The refund was sent again under its own key.".to_string()
                }
                "succeeded" | "failed" => {
                    let succeeded = (form.action == "succeeded").then(|| form.gateway_id.trim().to_string());
                    let settled = refunds::settle_by_hand(conn, refund.id, succeeded, &note, now)?;
                    repo::audit(conn, Some(user_id), &format!("settle_refund_{}", form.action), &subject, &note)?;
                    match settled {
                        Some(r) => format!("The refund is now {}.", r.status),
                        None => "The refund was already settled; nothing changed.".to_string(),
                    }
                }
                _ => return Err(MerchantError::BadInput("Unknown action.".into())),
            };
            Ok::<_, MerchantError>(message)
        })
        .await?;
    state.wake.notify();
    Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{payment_ref}"), &message))
}

/// A payment whose job died or whose outcome is unknown: asked about again (the charge job
/// again, under the same gateway key, or a lookup for one awaiting confirmation), or settled by
/// hand with a note. Both go to the audit log.
async fn settle_payment(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: State,
    path: web::Path<String>,
    form: web::Form<SettleForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let reference = parse_reference(&path)?;
    let (_, row) = visible_payment(&db, user.0.id, reference).await?;
    let form = form.into_inner();
    let note = form.checked_note()?;
    let (user_id, now, attempts) = (user.0.id, state.clock.now(), state.limits.charge_attempts);
    let processor = state.processor.clone();
    let message = db
        .run(move |conn| {
            let payment = payments::reload(conn, row.id)?;
            let subject = format!("payment {}", payment.reference);
            let message = match form.action.as_str() {
                "replay" if payment.status == crate::payments::PaymentStatus::RequiresConfirmation => {
                    jobs::enqueue(conn, &crate::orders::pipeline::confirm_job(payment.id), now)?;
                    "The gateway will be asked about this payment now.".to_string()
                }
                "replay" => {
                    let order = crate::payments::PayOrder { user_id: payment.user_id, order_id: payment.order_id };
                    jobs::enqueue(conn, &crate::orders::pipeline::charge_job(order, attempts), now)?;
                    "The charge was sent again under its own key (the gateway cannot take it twice).".to_string()
                }
                "succeeded" | "failed" => {
                    let charge = (form.action == "succeeded").then(|| form.gateway_id.trim().to_string());
                    match processor.settle_by_hand(conn, payment.id, charge, &note)? {
                        Some(p) => format!("The payment is now {}.", p.status),
                        None => "The payment was already settled or is being worked on; nothing changed.".to_string(),
                    }
                }
                _ => return Err(MerchantError::BadInput("Unknown action.".into())),
            };
            repo::audit(conn, Some(user_id), &format!("payment_{}", form.action), &subject, &note)?;
            Ok::<_, MerchantError>(message)
        })
        .await?;
    state.wake.notify();
    Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{reference}"), &message))
}

// --- balances and ledgers -----------------------------------------------------------------------

pub struct BalanceView {
    pub customer_id: i64,
    pub customer: String,
    pub amounts: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard_balances.html")]
struct BalancesPage {
    layout: Layout,
    balances: Vec<BalanceView>,
}

async fn balances(req: HttpRequest, user: CurrentUser, db: Db) -> Result<HttpResponse, AppError> {
    let user_id = user.0.id;
    let (customers, balances) = db
        .run(move |conn| {
            let visible = repo::links(conn, user_id)?;
            Ok::<_, diesel::result::Error>((repo::customers(conn, &visible)?, repo::balances(conn, &visible)?))
        })
        .await?;
    let balances = customers
        .into_iter()
        .map(|c| BalanceView {
            amounts: balances.iter().filter(|b| b.customer_id == c.id).map(|b| format_money(&b.available, &b.currency)).collect(),
            customer_id: c.id,
            customer: c.name,
        })
        .collect();
    html(BalancesPage { layout: Layout::new(&req), balances })
}

pub struct EntryView {
    pub id: i64,
    pub kind: String,
    pub amount: String,
    pub source: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "dashboard_ledger.html")]
struct LedgerPage {
    layout: Layout,
    customer: String,
    amounts: Vec<String>,
    entries: Vec<EntryView>,
    older: Option<String>,
}

#[derive(Deserialize)]
struct LedgerQuery {
    starting_after: Option<i64>,
}

async fn ledger(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>, query: web::Query<LedgerQuery>) -> Result<HttpResponse, AppError> {
    let customer_id = crate::web::parse_id(&path)?;
    let (user_id, after) = (user.0.id, query.starting_after);
    let (customer, balances, mut entries) = db
        .run(move |conn| {
            if !repo::links(conn, user_id)?.contains(&customer_id) {
                return Err(MerchantError::NotFound("customer"));
            }
            let customer = repo::customer(conn, customer_id)?.ok_or(MerchantError::NotFound("customer"))?;
            Ok((customer, repo::balances(conn, &[customer_id])?, repo::ledger_page(conn, customer_id, after, None, 100)?))
        })
        .await?;
    let older = (entries.len() > 100).then(|| {
        entries.truncate(100);
        format!("/dashboard/balances/{customer_id}?starting_after={}", entries.last().map(|e| e.id).unwrap_or_default())
    });
    let page = LedgerPage {
        layout: Layout::new(&req),
        customer: customer.name,
        amounts: balances.iter().map(|b| format_money(&b.available, &b.currency)).collect(),
        entries: entries
            .into_iter()
            .map(|e| EntryView {
                id: e.id,
                kind: e.kind.replace('_', " "),
                amount: format_money(&e.amount, &e.currency),
                source: e.source.to_string(),
                created: e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            })
            .collect(),
        older,
    };
    html(page)
}

// --- customers and their staff ------------------------------------------------------------------

pub struct CustomerView {
    pub id: i64,
    pub name: String,
    pub country: String,
    pub users: Vec<(i64, String)>,
}

#[derive(Template)]
#[template(path = "dashboard_customers.html")]
struct CustomersPage {
    layout: Layout,
    customers: Vec<CustomerView>,
}

async fn customers_index(req: HttpRequest, user: CurrentUser, db: Db) -> Result<HttpResponse, AppError> {
    let user_id = user.0.id;
    let (customers, users) = db
        .run(move |conn| {
            let visible = repo::links(conn, user_id)?;
            Ok::<_, diesel::result::Error>((repo::customers(conn, &visible)?, repo::linked_users(conn, &visible)?))
        })
        .await?;
    let customers = customers
        .into_iter()
        .map(|c| CustomerView {
            users: users.iter().filter(|u| u.customer_id == c.id).map(|u| (u.id, u.email.clone())).collect(),
            id: c.id,
            name: c.name,
            country: c.country.unwrap_or_default(),
        })
        .collect();
    html(CustomersPage { layout: Layout::new(&req), customers })
}

#[derive(Deserialize)]
struct CustomerForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    email: String,
}

fn customer_fields(form: &CustomerForm) -> Result<(String, Option<String>), AppError> {
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
        return Err(AppError::BadRequest("A customer's name is 1 to 200 characters.".into()));
    }
    let country = form.country.trim();
    let two_letters = country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic());
    if !country.is_empty() && !two_letters {
        return Err(AppError::BadRequest("A country is a two-letter code such as DK, or empty.".into()));
    }
    Ok((name.to_string(), (!country.is_empty()).then(|| country.to_ascii_uppercase())))
}

fn back_to_customers(req: &HttpRequest, notice: &str) -> HttpResponse {
    see_other_with_notice(req, "/dashboard/customers", notice)
}

async fn create_customer(req: HttpRequest, user: CurrentUser, session: Session, db: Db, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (name, country) = customer_fields(&form)?;
    let user_id = user.0.id;
    db.run(move |conn| repo::create_customer(conn, user_id, &name, country.as_deref())).await?;
    Ok(back_to_customers(&req, "Customer created."))
}

async fn edit_customer(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let id = crate::web::parse_id(&path)?;
    let (name, country) = customer_fields(&form)?;
    let user_id = user.0.id;
    db.run(move |conn| {
        if !repo::links(conn, user_id)?.contains(&id) {
            return Err(MerchantError::NotFound("customer"));
        }
        Ok(repo::update_customer(conn, id, Some(&name), Some(country.as_deref()))?)
    })
    .await?;
    Ok(back_to_customers(&req, "Customer saved."))
}

async fn link_user(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<CustomerForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let id = crate::web::parse_id(&path)?;
    let (user_id, email) = (user.0.id, form.email.trim().to_string());
    let linked = db
        .run(move |conn| {
            if !repo::links(conn, user_id)?.contains(&id) {
                return Err(MerchantError::NotFound("customer"));
            }
            Ok(repo::link_user(conn, id, &email, user_id))
        })
        .await?;
    Ok(back_to_customers(&req, &match linked {
        Ok(()) => "User linked.".to_string(),
        Err(e) => format!("Not linked: {e}."),
    }))
}

async fn unlink_user(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<(String, String)>, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let (id, target) = (crate::web::parse_id(&path.0)?, crate::web::parse_id(&path.1)?);
    let user_id = user.0.id;
    let unlinked = db
        .run(move |conn| {
            if !repo::links(conn, user_id)?.contains(&id) {
                return Err(MerchantError::NotFound("customer"));
            }
            Ok(repo::unlink_user(conn, id, target, user_id))
        })
        .await?;
    Ok(back_to_customers(&req, &match unlinked {
        Ok(()) => "User unlinked.".to_string(),
        Err(MerchantError::NotFound(_)) => return Err(AppError::NotFound),
        Err(e) => format!("Not unlinked: {e}."),
    }))
}

/// Runs the money invariants now (they also run every night).
async fn check_now(_user: CurrentUser, session: Session, db: Db, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    db.run(|conn| {
        let findings = repo::check_invariants(conn)?;
        repo::record_check(conn, &findings)
    })
    .await?;
    Ok(see_other("/dashboard/payments"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(|| async { see_other("/dashboard/payments") }))
        .route("/dashboard/payments", web::get().to(payments_index))
        .route("/dashboard/payments.csv", web::get().to(payments_csv))
        .route("/dashboard/payments/{id}", web::get().to(payment_detail))
        .route("/dashboard/payments/{id}/refunds", web::post().to(refund))
        .route("/dashboard/payments/{id}/refunds/{refund}", web::post().to(settle_refund))
        .route("/dashboard/payments/{id}/settle", web::post().to(settle_payment))
        .route("/dashboard/balances", web::get().to(balances))
        .route("/dashboard/balances/{customer_id}", web::get().to(ledger))
        .route("/dashboard/customers", web::get().to(customers_index))
        .route("/dashboard/customers", web::post().to(create_customer))
        .route("/dashboard/customers/{id}", web::post().to(edit_customer))
        .route("/dashboard/customers/{id}/users", web::post().to(link_user))
        .route("/dashboard/customers/{id}/users/{user_id}/remove", web::post().to(unlink_user))
        .route("/dashboard/invariants/check", web::post().to(check_now));
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
        for risky in ["+1", "-1", "@SUM(A1)"] {
            assert!(cell(risky).starts_with('\''), "{risky}");
        }
    }

    #[test]
    fn links_keep_the_filters_and_move_the_cursor() {
        let q = "status=completed&starting_after=abc&from=";
        assert_eq!(with_param(q, "starting_after", Some("def")), "status=completed&starting_after=def");
        assert_eq!(with_param(q, "starting_after", None), "status=completed");
    }
}
