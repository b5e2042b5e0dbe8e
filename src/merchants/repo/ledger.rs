//! Balances per customer and currency, and the ledger entries that make them.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::payments::{Currency, Money};
use uuid::Uuid;

use crate::schema::{
    balance_transactions, customer_balances,
};

#[derive(Debug, Clone, Queryable)]
pub struct Balance {
    pub customer_id: i64,
    pub currency: Currency,
    pub available: BigDecimal,
}

impl Balance {
    pub fn money(&self) -> Money {
        Money::stored(self.available.clone(), self.currency)
    }
}

pub fn balances(conn: &mut PgConnection, customer_ids: &[i64]) -> QueryResult<Vec<Balance>> {
    customer_balances::table
        .filter(customer_balances::customer_id.eq_any(customer_ids))
        .order((customer_balances::customer_id, customer_balances::currency))
        .select((customer_balances::customer_id, customer_balances::currency, customer_balances::available))
        .load(conn)
}

#[derive(Debug, Clone, Queryable)]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: String,
    pub amount: BigDecimal,
    pub currency: Currency,
    pub source: Uuid,
    pub created_at: DateTime<Utc>,
    pub public_id: Uuid,
}

impl LedgerEntry {
    pub fn money(&self) -> Money {
        Money::stored(self.amount.clone(), self.currency)
    }
}

/// One customer's ledger, newest first, `limit + 1` entries from the cursor on.
pub fn ledger_page(conn: &mut PgConnection, customer_id: i64, after: Option<i64>, before: Option<i64>, limit: i64) -> QueryResult<Vec<LedgerEntry>> {
    let columns = (
        balance_transactions::id,
        balance_transactions::kind,
        balance_transactions::amount,
        balance_transactions::currency,
        balance_transactions::source,
        balance_transactions::created_at,
        balance_transactions::public_id,
    );
    let mine = balance_transactions::table.filter(balance_transactions::customer_id.eq(customer_id)).select(columns).into_boxed();
    if let Some(before) = before {
        let mut newer: Vec<LedgerEntry> =
            mine.filter(balance_transactions::id.gt(before)).order(balance_transactions::id.asc()).limit(limit + 1).load(conn)?;
        newer.reverse();
        return Ok(newer);
    }
    let mine = match after {
        Some(after) => mine.filter(balance_transactions::id.lt(after)),
        None => mine,
    };
    mine.order(balance_transactions::id.desc()).limit(limit + 1).load(conn)
}

/// A ledger entry's key and customer, by the id callers know it by.
pub fn ledger_entry(conn: &mut PgConnection, public_id: Uuid) -> QueryResult<Option<(i64, i64)>> {
    balance_transactions::table
        .filter(balance_transactions::public_id.eq(public_id))
        .select((balance_transactions::id, balance_transactions::customer_id))
        .first(conn)
        .optional()
}
