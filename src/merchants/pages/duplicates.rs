//! Suspected double charges: one row per group of payments (same payer, merchant and amount,
//! each within two minutes of the one before), with a refund button for each payment after the
//! first and a "not a duplicate" button that dismisses the group (audited). The payments page
//! lists the oldest unresolved groups of its last 30 days; this page has them all, oldest first.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{links_of, parse_reference, staff_only};
use crate::auth::CurrentUser;
use crate::merchants::repo::{self, DuplicateGroup};
use crate::merchants::MerchantError;
use crate::web::{csrf, html, see_other_with_notice, AppError, Db, Layout};

/// A group as a row: its payments, and what refunding one of the later ones would give back.
pub struct GroupView {
    pub first: String,
    pub payer: String,
    pub customer: String,
    pub amount: String,
    /// The amount in major units, for the one-click refunds.
    pub refund: String,
    pub within: String,
    /// The payments after the first: each may be refunded.
    pub later: Vec<String>,
    pub count: usize,
    /// Minted at render, one per later payment's form: a double click refunds once.
    pub keys: Vec<String>,
}

impl From<DuplicateGroup> for GroupView {
    fn from(g: DuplicateGroup) -> GroupView {
        let later: Vec<String> = g.payments.iter().skip(1).map(Uuid::to_string).collect();
        GroupView {
            first: g.first.to_string(),
            payer: g.payer.clone(),
            customer: g.customer_name.clone(),
            amount: g.money().to_string(),
            refund: g.money().major(),
            within: if g.span_seconds < 1 { "within a second".into() } else { format!("within {} s", g.span_seconds) },
            keys: later.iter().map(|_| Uuid::new_v4().to_string()).collect(),
            count: g.payments.len(),
            later,
        }
    }
}

const PAGE: i64 = 20;

#[derive(Template)]
#[template(path = "dashboard_duplicates.html")]
struct DuplicatesPage {
    layout: Layout,
    groups: Vec<GroupView>,
    next: Option<String>,
    /// Where the groups' forms come back to.
    back: String,
}

#[derive(Deserialize)]
pub(super) struct AfterQuery {
    /// The last group of the page before: its first payment's time (RFC 3339) and reference.
    after_at: Option<DateTime<Utc>>,
    after: Option<Uuid>,
}

pub(super) async fn duplicates(req: HttpRequest, user: CurrentUser, db: Db, query: web::Query<AfterQuery>) -> Result<HttpResponse, AppError> {
    let (user_id, admin) = (user.0.id, user.0.is_admin);
    let after = query.after_at.zip(query.after);
    let mut groups = db
        .run(move |conn| {
            let linked = repo::links(conn, user_id)?;
            staff_only(&linked, admin)?;
            Ok::<_, MerchantError>(repo::duplicate_groups(conn, &linked.ids, DateTime::<Utc>::UNIX_EPOCH, after, PAGE + 1)?)
        })
        .await?;
    let next = (groups.len() as i64 > PAGE).then(|| {
        groups.truncate(PAGE as usize);
        let last = groups.last().expect("a full page");
        format!("/dashboard/duplicates?after_at={}&after={}", crate::web::url_encode(&last.first_at.to_rfc3339()), last.first)
    });
    html(DuplicatesPage { layout: Layout::new(&req), groups: groups.into_iter().map(GroupView::from).collect(), next, back: req.uri().to_string() })
}

#[derive(Deserialize)]
pub(super) struct DismissForm {
    #[serde(default)]
    csrf_token: String,
    /// How many payments the group held when it was looked at.
    #[serde(default)]
    seen: i32,
    /// The dashboard page the form was on, to come back to.
    #[serde(default)]
    back: String,
}

/// "Not a duplicate": the group is dismissed while it holds no more payments than were seen.
pub(super) async fn dismiss(req: HttpRequest, user: CurrentUser, session: Session, db: Db, path: web::Path<String>, form: web::Form<DismissForm>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &form.csrf_token)?;
    let first = parse_reference(&path)?;
    if !(2..=10_000).contains(&form.seen) {
        return Err(AppError::BadRequest("A suspected double charge holds at least two payments.".into()));
    }
    let linked = links_of(&db, user.0.id).await?;
    let (user_id, seen) = (user.0.id, form.seen);
    db.run(move |conn| repo::dismiss_duplicate(conn, &linked.ids, first, seen, user_id)).await?;
    let back = if form.back.starts_with("/dashboard/") && !form.back.contains("//") { form.back.as_str() } else { "/dashboard/duplicates" };
    Ok(see_other_with_notice(&req, back, "Marked as not a double charge. It comes back if another payment joins it."))
}
