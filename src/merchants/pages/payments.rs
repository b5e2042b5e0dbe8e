//! The payments table (filters in the URL, totals, a daily chart, suspected double charges), one
//! payment with its history, and settling a payment whose outcome is stuck.

use actix_session::Session;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bigdecimal::BigDecimal;
use chrono::{Datelike, Duration as ChronoDuration, NaiveDate};
use std::collections::BTreeMap;
use std::str::FromStr;
use uuid::Uuid;

use crate::merchants::domain::{Cursor, PaymentFilter};
use crate::merchants::query::{parse_query, FILTER_PARAMS, LIST_PARAMS};
use crate::merchants::repo::{self, DailyVolume};
use crate::merchants::{service, MerchantError};
use super::*;
use crate::merchants::ids::CUSTOMER;
use super::refunds::{refund_view, RefundView};
use crate::auth::{AdminUser, CurrentUser};
use crate::jobs;
use crate::payments::{Currency, Money};
use crate::payments::refunds::{self};
use crate::payments::repo as payments;
use crate::web::{csrf, html, see_other, see_other_with_notice, AppError, Db, Layout, ReadDb};

/// Completed payments of one currency in the filtered set: how many, their gross, and what is
/// left of it after refunds.
pub struct Total {
    pub count: i64,
    pub currency: String,
    pub gross: String,
    pub net: String,
}

/// A label on one of the chart's axes, placed on the server.
pub struct Tick {
    pub at: i64,
    pub label: String,
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
    /// Amounts up the side (zero, half the highest day, the highest day).
    pub amounts: Vec<Tick>,
    /// Dates along the bottom (the first day, the middle one, the last).
    pub dates: Vec<Tick>,
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
    check: Option<service::MoneyChecks>,
    /// Read from a replica this far (seconds) behind the primary.
    replica_lag: Option<String>,
    /// The oldest unresolved suspected double charges of the last 30 days.
    groups: Vec<super::duplicates::GroupView>,
    /// More than those are waiting on /dashboard/duplicates.
    more_groups: bool,
    back: String,
}

const CHART_HEIGHT: i64 = 120;
const CHART_WIDTH: usize = 620;

fn charts(volume: &[DailyVolume], filter: &PaymentFilter, today: NaiveDate) -> Vec<Chart> {
    let last = filter.created_before.map(|t| (t - ChronoDuration::seconds(1)).date_naive()).unwrap_or(today).min(today);
    let first = filter.created_from.map(|t| t.date_naive()).unwrap_or(last - ChronoDuration::days(29)).max(last - ChronoDuration::days(89));
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    let mut currencies: Vec<Currency> = volume.iter().map(|v| v.currency).collect();
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
                    Bar { x: i * step, y: CHART_HEIGHT - height, height, day: day.to_string(), label: Money::stored(sum.clone(), currency).to_string() }
                })
                .collect();
            let half = Money::stored(&max / BigDecimal::from(2), currency);
            let amounts = vec![
                Tick { at: CHART_HEIGHT, label: Money::stored(BigDecimal::from(0), currency).major() },
                Tick { at: CHART_HEIGHT / 2, label: half.major() },
                Tick { at: 0, label: Money::stored(max.clone(), currency).major() },
            ];
            let label = |i: usize| days.get(i).map(|d| d.format("%b %-d").to_string()).unwrap_or_default();
            let middle = days.len() / 2;
            let mut dates = vec![Tick { at: 0, label: label(0) }];
            if days.len() > 2 {
                dates.push(Tick { at: (middle * step) as i64, label: label(middle) });
            }
            if days.len() > 1 {
                dates.push(Tick { at: ((days.len() - 1) * step) as i64, label: label(days.len() - 1) });
            }
            Chart { currency: currency.to_string(), bars, width: step.saturating_sub(1).max(1), max: Money::stored(max, currency).to_string(), amounts, dates }
        })
        .collect()
}

/// The page's amount bounds, typed as the table shows amounts (`12.50`); the API's filters take
/// minor units (`amount[gte]=1250`), which the page turns them into (every settled currency has
/// two decimals).
const PAGE_AMOUNTS: [&str; 2] = ["amount_min", "amount_max"];

fn minor_units(param: &str, raw: &str) -> Result<i64, crate::merchants::error::ApiError> {
    let why = "it is an amount such as 12.50";
    let amount = BigDecimal::from_str(raw.trim()).map_err(|_| crate::merchants::error::ApiError::bad_value(param, why))?;
    let minor = amount * BigDecimal::from(100);
    if minor < BigDecimal::from(0) || !minor.is_integer() || minor > BigDecimal::from(i64::MAX / 2) {
        return Err(crate::merchants::error::ApiError::bad_value(param, why));
    }
    Ok(bigdecimal::ToPrimitive::to_i64(&minor).unwrap_or(0))
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

pub(super) async fn payments_index(req: HttpRequest, user: CurrentUser, db: Db, read: ReadDb, state: State) -> Result<HttpResponse, AppError> {
    // The bare page shows the last 30 days, with the range in the URL: the totals and the chart
    // add up the whole filtered set, which at a million payments costs ~300 ms for a year and
    // ~27 ms for a month (bench/merchants.md). "All time" is one click away.
    if req.query_string().is_empty() {
        let today = state.clock.now().date_naive();
        return Ok(see_other(&format!("/dashboard/payments?from={}&to={today}", today - ChronoDuration::days(29))));
    }
    let query = parse_query(req.query_string(), &[&LIST_PARAMS[..], &FILTER_PARAMS[..], &PAGE_AMOUNTS[..]].concat()).map_err(bad_filter)?;
    let params = query.list(50).map_err(bad_filter)?;
    let mut filter = query.payment_filter().map_err(bad_filter)?;
    if let Some(raw) = query.get("amount_min") {
        filter.amount_gte = Some(minor_units("amount_min", raw).map_err(bad_filter)?);
    }
    if let Some(raw) = query.get("amount_max") {
        filter.amount_lte = Some(minor_units("amount_max", raw).map_err(bad_filter)?);
    }
    let (amount_gte, amount_lte) = (filter.amount_gte, filter.amount_lte);
    let backwards = matches!(params.cursor, Some(Cursor::Before(_)));
    let chart_filter = filter.clone();
    let (user_id, admin) = (user.0.id, user.0.is_admin);
    let now = state.clock.now();
    let today = state.clock.now().date_naive();
    // Who may see what is read on the primary (an unlink takes effect at once); the page's rows,
    // totals and chart may come from a replica.
    let visible = db
        .run(move |conn| {
            let visible = repo::links(conn, user_id)?;
            staff_only(&visible, admin)?;
            Ok::<_, MerchantError>(visible)
        })
        .await?;
    let replica = read.is_replica();
    let (service::Overview { rows, has_more, volume, customers, check, suspects }, lag) = read
        .run(move |conn| {
            let overview = service::overview(conn, &visible, &filter, &params, now - ChronoDuration::days(30), admin)?;
            let lag = if replica { crate::web::replica_lag(conn)? } else { None };
            Ok::<_, MerchantError>((overview, lag))
        })
        .await?;
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
    let mut totals: BTreeMap<Currency, (i64, BigDecimal, BigDecimal)> = BTreeMap::new();
    for v in &volume {
        let entry = totals.entry(v.currency).or_default();
        entry.0 += v.count;
        entry.1 += &v.total;
        entry.2 += &v.refunded;
    }
    let form: BTreeMap<&'static str, String> =
        FILTER_PARAMS.iter().chain(PAGE_AMOUNTS.iter()).map(|name| (*name, query.get(name).unwrap_or_default().to_string())).collect();
    let selected_customer = query.get("customer").unwrap_or_default().to_string();
    let selected_status = query.get("status").unwrap_or_default().to_string();
    // The export takes the API's filters: the page's amounts go to it in minor units.
    let mut csv_query = with_param(&with_param(&with_param(raw, "starting_after", None), "ending_before", None), "limit", None);
    for (page_name, api_name, bound) in [("amount_min", "amount[gte]", amount_gte), ("amount_max", "amount[lte]", amount_lte)] {
        csv_query = with_param(&with_param(&csv_query, page_name, None), api_name, bound.map(|b| b.to_string()).as_deref());
    }
    let page = PaymentsPage {
        layout: Layout::new(&req),
        rows: rows.iter().map(Row::from).collect(),
        totals: totals
            .into_iter()
            .map(|(currency, (count, gross, refunded))| Total {
                net: Money::stored(&gross - refunded, currency).to_string(),
                gross: Money::stored(gross, currency).to_string(),
                currency: currency.to_string(),
                count,
            })
            .collect(),
        charts: charts(&volume, &chart_filter, today),
        presets: presets(today),
        customers: customers
            .into_iter()
            .map(|c| {
                let id = CUSTOMER.show(c.public_id);
                Option_ { selected: id == selected_customer, value: id, label: c.name }
            })
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
        replica_lag: lag.map(|s| if s < 1.0 { "less than a second".to_string() } else { format!("{s:.0} s") }),
        more_groups: suspects.len() as i64 > service::SUSPECTS_SHOWN,
        groups: suspects.into_iter().take(service::SUSPECTS_SHOWN as usize).map(super::duplicates::GroupView::from).collect(),
        back: req.uri().to_string(),
    };
    let mut response = html(page)?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
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
    /// When, what happened in the shopper's words, and the operator's reason.
    history: Vec<(String, &'static str, String)>,
    refunds: Vec<RefundView>,
    refundable: bool,
    /// The payment's outcome is open and nothing is working on it: offer replay and settling.
    stuck: bool,
    remaining: String,
    idempotency_key: String,
}

pub(super) async fn payment_detail(req: HttpRequest, user: CurrentUser, db: Db, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let reference = parse_reference(&path)?;
    let (_, payment) = visible_payment(&db, user.0.id, reference).await?;
    let payment_id = payment.id;
    let order_id = payment.order_id;
    let (events, refunds, dead) = db
        .run(move |conn| {
            let refunds = refunds::for_payment(conn, payment_id)?;
            let mut keys: Vec<String> = refunds.iter().map(|r| format!("{}:{}", crate::merchants::jobs::REFUND_PAYMENT, r.id)).collect();
            keys.push(service::charge_job_key(order_id));
            let dead = jobs::dead_unique_keys(conn, &keys)?;
            Ok::<_, diesel::result::Error>((payments::events(conn, payment_id)?, refunds, dead))
        })
        .await?;
    let stuck = service::stuck(payment.status, payment.retryable, dead.contains(&service::charge_job_key(order_id)));
    let remaining = payment.remaining();
    let page = PaymentPage {
        layout: Layout::new(&req),
        refundable: payment.status == crate::payments::PaymentStatus::Completed && remaining.is_positive(),
        stuck,
        remaining: remaining.major(),
        currency: payment.currency.to_string(),
        description: payment.description.clone().unwrap_or_default(),
        transaction: payment.external_transaction_id.clone().unwrap_or_default(),
        failure: (payment.status == crate::payments::PaymentStatus::Failed).then(|| payment.error_message.clone()).flatten(),
        payment: Row::from(&payment),
        history: events
            .iter()
            .zip(payments::history_in_words(&events, payment.is_final()))
            .map(|(e, words)| (e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(), words, e.reason.clone()))
            .collect(),
        refunds: refunds
            .iter()
            .map(|r| refund_view(r, r.status == refunds::PENDING && dead.contains(&format!("{}:{}", crate::merchants::jobs::REFUND_PAYMENT, r.id))))
            .collect(),
        idempotency_key: Uuid::new_v4().to_string(),
    };
    let mut response = html(page)?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A payment whose job died or whose outcome is unknown: asked about again (the charge job
/// again, under the same gateway key, or a lookup for one awaiting confirmation), or settled by
/// hand with a note. Both go to the audit log.
pub(super) async fn settle_payment(
    req: HttpRequest,
    user: CurrentUser,
    session: Session,
    db: Db,
    state: State,
    path: web::Path<String>,
    form: web::Form<SettleForm>,
) -> Result<HttpResponse, AppError> {
    let (reference, _, row) = posted_about_payment(&session, &form.csrf_token, &db, user.0.id, &path).await?;
    let form = form.into_inner();
    let note = form.checked_note()?;
    let (user_id, now, attempts) = (user.0.id, state.clock.now(), state.limits.charge_attempts);
    let processor = state.processor.clone();
    let decision = db
        .run(move |conn| {
            let ask = service::HandAsk { user_id, action: form.action, gateway_id: form.gateway_id, note };
            service::decide_by_hand(conn, &processor, row.id, &ask, attempts, now)
        })
        .await?;
    let message = match decision {
        service::HandDecision::Done(message) => message,
        service::HandDecision::Refused(message) => return Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{reference}"), &message)),
    };
    state.wake.notify();
    Ok(see_other_with_notice(&req, &format!("/dashboard/payments/{reference}"), &message))
}

/// Runs the money invariants over every merchant now (they also run every night): an
/// administrator's button; to anyone else the URL does not exist.
pub(super) async fn check_now(_admin: AdminUser, session: Session, db: Db, form: web::Form<csrf::TokenForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    db.run(repo::run_and_record).await?;
    Ok(see_other("/dashboard/payments"))
}
