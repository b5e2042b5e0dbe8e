//! Fraud checks as strategies: the pipeline asks a `FraudCheck` before charging, and any rule set
//! can be injected (tests bring their own).

use bigdecimal::BigDecimal;
use chrono::Duration as ChronoDuration;
use diesel::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::schema::payments;

/// What a fraud rule may look at.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    pub user_id: i64,
    pub order_id: i64,
    pub amount: BigDecimal,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject(String),
}

pub trait FraudCheck: Send + Sync {
    fn check(&self, conn: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict>;
}

/// Rejects a single order above a limit.
pub struct AmountLimit {
    pub max: BigDecimal,
}

impl FraudCheck for AmountLimit {
    fn check(&self, _: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        Ok(if facts.amount > self.max {
            Verdict::Reject(format!("orders above {} {} need a manual review", self.max, facts.currency))
        } else {
            Verdict::Allow
        })
    }
}

/// Rejects a user who starts more than `max` payments within `window`.
pub struct VelocityLimit {
    pub max: i64,
    pub window: Duration,
    pub clock: Arc<dyn Clock>,
}

impl FraudCheck for VelocityLimit {
    fn check(&self, conn: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        let since = self.clock.now() - ChronoDuration::from_std(self.window).unwrap_or(ChronoDuration::MAX);
        let recent: i64 = payments::table
            .filter(payments::user_id.eq(facts.user_id))
            .filter(payments::created_at.ge(since))
            .filter(payments::order_id.ne(facts.order_id))
            .count()
            .get_result(conn)?;
        Ok(if recent >= self.max {
            Verdict::Reject(format!("too many payments in a short time ({recent} in the last {} minutes)", self.window.as_secs() / 60))
        } else {
            Verdict::Allow
        })
    }
}

/// Every rule must allow; the first rejection wins.
pub struct AllOf(pub Vec<Arc<dyn FraudCheck>>);

impl FraudCheck for AllOf {
    fn check(&self, conn: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        for rule in &self.0 {
            if let Verdict::Reject(why) = rule.check(conn, facts)? {
                return Ok(Verdict::Reject(why));
            }
        }
        Ok(Verdict::Allow)
    }
}

/// Lets everything through.
pub struct NoFraudCheck;

impl FraudCheck for NoFraudCheck {
    fn check(&self, _: &mut PgConnection, _: &OrderFacts) -> QueryResult<Verdict> {
        Ok(Verdict::Allow)
    }
}

/// The rules Agora runs with: a per-order amount limit and a per-user velocity limit.
pub fn default_rules(clock: Arc<dyn Clock>) -> AllOf {
    AllOf(vec![
        Arc::new(AmountLimit { max: BigDecimal::from(5_000) }),
        Arc::new(VelocityLimit { max: 20, window: Duration::from_secs(3600), clock }),
    ])
}
