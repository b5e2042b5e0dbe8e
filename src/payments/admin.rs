//! The payments operations page for administrators (`/admin/payments`): payments whose outcome
//! the gateway has not confirmed, with "Check now", and the gateway's circuit breaker.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::breaker::{BreakerState, CircuitBreaker};
use super::repo::{self, Payment};
use crate::auth::AdminUser;
use crate::web::{html, AppError, Db, Layout};

/// What the operations page needs, registered as app data by `app::mount`.
pub struct PaymentsState {
    pub breaker: CircuitBreaker,
}

/// A payment whose outcome the gateway has not confirmed: money may have moved.
pub struct UnconfirmedView {
    pub reference: String,
    pub order_id: i64,
    pub amount: String,
    pub since: String,
    pub checks: i32,
    pub next_check: String,
    pub reason: String,
}

impl From<Payment> for UnconfirmedView {
    fn from(p: Payment) -> Self {
        let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        UnconfirmedView {
            reference: p.reference.to_string(),
            order_id: p.order_id,
            amount: p.money().to_string(),
            since: stamp(p.updated_at),
            checks: p.confirmation_checks,
            next_check: p.next_check_at.map(stamp).unwrap_or_default(),
            reason: p.error_message.unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_payments.html")]
struct OperationsPage {
    layout: Layout,
    unconfirmed: Vec<UnconfirmedView>,
    breaker: Option<BreakerState>,
}

async fn page(req: HttpRequest, _admin: AdminUser, db: Db, state: web::Data<PaymentsState>) -> Result<HttpResponse, AppError> {
    let breaker = state.breaker.clone();
    let (unconfirmed, breaker) =
        db.run(move |conn| Ok::<_, diesel::result::Error>((repo::awaiting_confirmation(conn, 50)?, breaker.state(conn)?))).await?;
    html(OperationsPage { layout: Layout::new(&req), unconfirmed: unconfirmed.into_iter().map(UnconfirmedView::from).collect(), breaker })
}

/// `/metrics` reads the breaker from PostgreSQL, as every process sees it.
impl crate::metrics::DatabaseGauges for CircuitBreaker {
    fn refresh(&self, conn: &mut diesel::PgConnection) -> diesel::QueryResult<()> {
        let open = self.state(conn)?.is_some_and(|b| b.state != "closed");
        crate::metrics::metrics().breaker_open.set(i64::from(open));
        Ok(())
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/payments", web::get().to(page));
}
