//! Fraud checks as strategies: the pipeline asks a `FraudCheck` before charging, and any rule set
//! can be injected (tests bring their own).

use bigdecimal::BigDecimal;
use chrono::Duration as ChronoDuration;
use diesel::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use super::money::Money;
use crate::clock::Clock;
use crate::schema::payments;

/// What a fraud rule may look at.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    pub user_id: i64,
    pub order_id: i64,
    pub money: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject(String),
}

pub trait FraudCheck: Send + Sync {
    fn check(&self, conn: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict>;

    /// The verdicts for many orders at once; rules that read the database override it to read
    /// once for the whole batch instead of once per order.
    fn check_many(&self, conn: &mut PgConnection, facts: &[OrderFacts]) -> QueryResult<Vec<Verdict>> {
        facts.iter().map(|f| self.check(conn, f)).collect()
    }
}

/// Rejects a single order above a limit.
pub struct AmountLimit {
    pub max: BigDecimal,
}

impl FraudCheck for AmountLimit {
    fn check(&self, _: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        Ok(if facts.money.amount() > &self.max {
            Verdict::Reject(format!("orders above {} {} need a manual review", self.max, facts.money.currency()))
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

impl VelocityLimit {
    fn verdict(&self, recent: i64) -> Verdict {
        if recent >= self.max {
            Verdict::Reject(format!("too many payments in a short time ({recent} in the last {} minutes)", self.window.as_secs() / 60))
        } else {
            Verdict::Allow
        }
    }
}

impl FraudCheck for VelocityLimit {
    fn check(&self, conn: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        Ok(self.check_many(conn, std::slice::from_ref(facts))?.remove(0))
    }

    /// Two small queries for the whole batch: each user's recent payments, counted, and which of
    /// the batch's own orders are among them (an order's own payment does not count against it).
    fn check_many(&self, conn: &mut PgConnection, facts: &[OrderFacts]) -> QueryResult<Vec<Verdict>> {
        let since = self.clock.now() - ChronoDuration::from_std(self.window).unwrap_or(ChronoDuration::MAX);
        let users: Vec<i64> = facts.iter().map(|f| f.user_id).collect();
        let orders: Vec<i64> = facts.iter().map(|f| f.order_id).collect();
        let per_user: Vec<(i64, i64)> = payments::table
            .filter(payments::user_id.eq_any(&users))
            .filter(payments::created_at.ge(since))
            .group_by(payments::user_id)
            .select((payments::user_id, diesel::dsl::count_star()))
            .load(conn)?;
        let own: Vec<i64> = payments::table
            .filter(payments::order_id.eq_any(&orders))
            .filter(payments::created_at.ge(since))
            .select(payments::order_id)
            .load(conn)?;
        Ok(facts
            .iter()
            .map(|f| {
                let total = per_user.iter().find(|(u, _)| *u == f.user_id).map_or(0, |(_, n)| *n);
                self.verdict(total - i64::from(own.contains(&f.order_id)))
            })
            .collect())
    }
}

/// Every rule must allow; the first rejection wins.
pub struct AllOf(pub Vec<Arc<dyn FraudCheck>>);

impl FraudCheck for AllOf {
    fn check(&self, conn: &mut PgConnection, facts: &OrderFacts) -> QueryResult<Verdict> {
        Ok(self.check_many(conn, std::slice::from_ref(facts))?.remove(0))
    }

    fn check_many(&self, conn: &mut PgConnection, facts: &[OrderFacts]) -> QueryResult<Vec<Verdict>> {
        let mut verdicts = vec![Verdict::Allow; facts.len()];
        for rule in &self.0 {
            for (verdict, said) in verdicts.iter_mut().zip(rule.check_many(conn, facts)?) {
                if *verdict == Verdict::Allow {
                    *verdict = said;
                }
            }
        }
        Ok(verdicts)
    }
}

/// Lets everything through.
pub struct NoFraudCheck;

impl FraudCheck for NoFraudCheck {
    fn check(&self, _: &mut PgConnection, _: &OrderFacts) -> QueryResult<Verdict> {
        Ok(Verdict::Allow)
    }
}

/// The rules Agora runs with: a per-order amount limit and a per-user velocity limit of 20
/// payments an hour.
pub fn default_rules(clock: Arc<dyn Clock>) -> AllOf {
    rules(clock, 20)
}

/// The same rules with another velocity limit (`FRAUD_VELOCITY_MAX`).
pub fn rules(clock: Arc<dyn Clock>, payments_per_hour: i64) -> AllOf {
    AllOf(vec![
        Arc::new(AmountLimit { max: BigDecimal::from(5_000) }),
        Arc::new(VelocityLimit { max: payments_per_hour, window: Duration::from_secs(3600), clock }),
    ])
}
