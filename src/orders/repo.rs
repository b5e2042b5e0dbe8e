//! Every query the orders area makes.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::OrderError;
use crate::payments::{Currency, Money, PaymentStatus};
use crate::schema::{customers, order_items, orders, payments, products, users};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub customer_id: i64,
    pub status: String,
    pub total: BigDecimal,
    pub currency: Currency,
    pub created_at: DateTime<Utc>,
    /// `shop` (placed from the catalogue) or `api` (a merchant's payment through the API).
    pub source: String,
}

impl Order {
    /// What paying for it takes.
    pub fn due(&self) -> Money {
        Money::stored(self.total.clone(), self.currency)
    }
}

/// An order with its merchant's name and, once paying has begun, its payment.
#[derive(Debug, Clone, Queryable)]
pub struct OrderSummary {
    pub order: Order,
    pub merchant: String,
    pub payment_reference: Option<Uuid>,
    pub payment_status: Option<PaymentStatus>,
    pub payment_retryable: Option<bool>,
}

#[derive(Debug, Clone, Queryable)]
pub struct CheckoutLine {
    pub product: String,
    pub quantity: i32,
    pub unit_price: BigDecimal,
}

/// The order's owner only: someone else's order is indistinguishable from a missing one. With it,
/// once its payment has completed, the receipt: read from the same row, in the same query.
pub fn find_summary(conn: &mut PgConnection, user_id: i64, order_id: i64) -> QueryResult<Option<(OrderSummary, Option<Receipt>)>> {
    type Row = (
        Order,
        String,
        Option<Uuid>,
        Option<PaymentStatus>,
        Option<bool>,
        Option<BigDecimal>,
        Option<Currency>,
        Option<DateTime<Utc>>,
        Option<BigDecimal>,
    );
    let found: Option<Row> = orders::table
        .inner_join(customers::table)
        .left_join(payments::table)
        .filter(orders::id.eq(order_id).and(orders::user_id.eq(user_id)))
        .select((
            Order::as_select(),
            customers::name,
            payments::reference.nullable(),
            payments::status.nullable(),
            payments::retryable.nullable(),
            payments::amount.nullable(),
            payments::currency.nullable(),
            payments::updated_at.nullable(),
            payments::amount_refunded.nullable(),
        ))
        .first(conn)
        .optional()?;
    Ok(found.map(|(order, merchant, reference, status, retryable, amount, currency, paid_at, refunded)| {
        let receipt = match (status, reference, amount, currency, paid_at, refunded) {
            (Some(PaymentStatus::Completed), Some(reference), Some(amount), Some(currency), Some(paid_at), Some(refunded)) => {
                Some(Receipt { reference, paid: Money::stored(amount, currency), paid_at, refunded: Money::stored(refunded, currency) })
            }
            _ => None,
        };
        let summary = OrderSummary { order, merchant, payment_reference: reference, payment_status: status, payment_retryable: retryable };
        (summary, receipt)
    }))
}

pub fn lines(conn: &mut PgConnection, order_id: i64) -> QueryResult<Vec<CheckoutLine>> {
    order_items::table
        .inner_join(products::table)
        .filter(order_items::order_id.eq(order_id))
        .order(order_items::id.asc())
        .select((products::name, order_items::quantity, order_items::unit_price))
        .load(conn)
}

/// What a paid order's receipt shows: its completed payment.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub reference: Uuid,
    pub paid: Money,
    pub paid_at: DateTime<Utc>,
    pub refunded: Money,
}

/// The user's latest orders, newest first.
pub fn recent_for_user(conn: &mut PgConnection, user_id: i64, limit: i64) -> QueryResult<Vec<OrderSummary>> {
    orders::table
        .inner_join(customers::table)
        .left_join(payments::table)
        .filter(orders::user_id.eq(user_id).and(orders::source.eq("shop")))
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(limit)
        .select((Order::as_select(), customers::name, payments::reference.nullable(), payments::status.nullable(), payments::retryable.nullable()))
        .load(conn)
}

/// Places an order at today's prices and reserves its stock, in one transaction: every product's
/// stock is taken with a conditional `UPDATE … WHERE stock >= qty`, so it is never oversold, and a
/// shortage anywhere leaves nothing behind.
///
/// An account holds at most `max_unpaid` unpaid orders: each one keeps stock from everybody else.
/// The user's row is locked while they are counted, so concurrent orders cannot both slip in.
pub fn create(conn: &mut PgConnection, user_id: i64, items: &[(i64, i32)], max_unpaid: i64) -> Result<i64, OrderError> {
    if items.is_empty() {
        return Err(OrderError::Empty);
    }
    if items.iter().any(|(_, q)| !(1..=1000).contains(q)) {
        return Err(OrderError::BadQuantity);
    }
    conn.transaction(|conn| {
        users::table.find(user_id).select(users::id).for_update().first::<i64>(conn)?;
        let unpaid: i64 = orders::table
            .filter(orders::user_id.eq(user_id))
            .filter(orders::status.eq("pending"))
            .filter(orders::source.eq("shop"))
            .count()
            .get_result(conn)?;
        if unpaid >= max_unpaid {
            return Err(OrderError::TooManyUnpaid { max: max_unpaid });
        }
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        let found: Vec<(i64, i64, BigDecimal, Currency, String)> = products::table
            .filter(products::id.eq_any(&ids))
            .select((products::id, products::customer_id, products::price, products::currency, products::name))
            .load(conn)?;
        let mut total = BigDecimal::from(0);
        let mut merchant = None;
        let mut rows = Vec::with_capacity(items.len());
        for (product_id, quantity) in items {
            let (_, customer_id, price, currency, _) =
                found.iter().find(|p| p.0 == *product_id).ok_or(OrderError::UnknownProduct(*product_id))?;
            match merchant {
                None => merchant = Some((*customer_id, *currency)),
                Some((m, _)) if m != *customer_id => return Err(OrderError::MixedMerchants),
                Some(_) => {}
            }
            total += price * BigDecimal::from(*quantity);
            rows.push((*product_id, *quantity, price.clone()));
        }
        let (customer_id, currency) = merchant.expect("at least one item");
        let names: Vec<(i64, String)> = found.iter().map(|p| (p.0, p.4.clone())).collect();
        reserve(conn, items, &names)?;
        let order_id: i64 = diesel::insert_into(orders::table)
            .values((
                orders::user_id.eq(user_id),
                orders::customer_id.eq(customer_id),
                orders::total.eq(total),
                orders::currency.eq(currency),
                orders::stock_reserved.eq(true),
            ))
            .returning(orders::id)
            .get_result(conn)?;
        let values: Vec<_> = rows
            .into_iter()
            .map(|(product_id, quantity, price)| {
                (
                    order_items::order_id.eq(order_id),
                    order_items::product_id.eq(product_id),
                    order_items::quantity.eq(quantity),
                    order_items::unit_price.eq(price),
                )
            })
            .collect();
        diesel::insert_into(order_items::table).values(values).execute(conn)?;
        Ok(order_id)
    })
}

/// The order a payment made through the API pays for: no items, no stock; its amount is the
/// payment's.
pub fn create_for_api(conn: &mut PgConnection, user_id: i64, customer_id: i64, due: &Money) -> QueryResult<i64> {
    diesel::insert_into(orders::table)
        .values((
            orders::user_id.eq(user_id),
            orders::customer_id.eq(customer_id),
            orders::total.eq(due.amount()),
            orders::currency.eq(due.currency()),
            orders::source.eq("api"),
        ))
        .returning(orders::id)
        .get_result(conn)
}

/// Ids for `n` orders about to be written together, drawn from the orders' own sequence.
pub fn reserve_ids(conn: &mut PgConnection, n: usize) -> QueryResult<Vec<i64>> {
    #[derive(QueryableByName)]
    struct Drawn {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let drawn: Vec<Drawn> = diesel::sql_query("SELECT nextval('orders_id_seq') AS id FROM generate_series(1, $1)")
        .bind::<diesel::sql_types::Integer, _>(n as i32)
        .load(conn)?;
    Ok(drawn.into_iter().map(|d| d.id).collect())
}

/// Takes each product's total quantity from its stock, in id order (so concurrent orders lock
/// products in the same order and cannot deadlock).
fn reserve(conn: &mut PgConnection, items: &[(i64, i32)], names: &[(i64, String)]) -> Result<(), OrderError> {
    let mut wanted: std::collections::BTreeMap<i64, i32> = std::collections::BTreeMap::new();
    for (product_id, quantity) in items {
        *wanted.entry(*product_id).or_default() += quantity;
    }
    for (product_id, quantity) in wanted {
        let taken = diesel::update(products::table.find(product_id).filter(products::stock.ge(quantity)))
            .set(products::stock.eq(products::stock - quantity))
            .returning(products::stock)
            .get_result::<i32>(conn)
            .optional()?;
        if taken.is_none() {
            let left: i32 = products::table.find(product_id).select(products::stock).first(conn)?;
            let name = names.iter().find(|(id, _)| *id == product_id).map(|(_, n)| n.clone()).unwrap_or_default();
            return Err(OrderError::OutOfStock { product: name, left });
        }
    }
    Ok(())
}

/// Gives the order's stock back, once: only the call that flips `stock_reserved` adds it back.
pub fn release_stock(conn: &mut PgConnection, order_id: i64) -> QueryResult<bool> {
    let released = diesel::update(orders::table.find(order_id).filter(orders::stock_reserved.eq(true)))
        .set(orders::stock_reserved.eq(false))
        .execute(conn)?;
    if released == 0 {
        return Ok(false);
    }
    diesel::sql_query(
        "UPDATE products p SET stock = p.stock + i.quantity \
         FROM (SELECT product_id, sum(quantity)::int AS quantity FROM order_items WHERE order_id = $1 GROUP BY product_id) i \
         WHERE p.id = i.product_id",
    )
    .bind::<diesel::sql_types::BigInt, _>(order_id)
    .execute(conn)?;
    Ok(true)
}

/// These orders' payments completed.
pub fn mark_paid(conn: &mut PgConnection, order_ids: &[i64], now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::update(orders::table.filter(orders::id.eq_any(order_ids)).filter(orders::status.eq("pending")))
        .set((orders::status.eq("paid"), orders::updated_at.eq(now)))
        .execute(conn)
}

/// Ends an unpaid order (`failed`, `expired`, `cancelled`) and gives its stock back.
/// `false` when the order was no longer pending.
pub fn close_unpaid(conn: &mut PgConnection, order_id: i64, status: &str, now: DateTime<Utc>) -> QueryResult<bool> {
    let closed = diesel::update(orders::table.find(order_id).filter(orders::status.eq("pending")))
        .set((orders::status.eq(status), orders::updated_at.eq(now)))
        .execute(conn)?;
    if closed == 1 {
        release_stock(conn, order_id)?;
    }
    Ok(closed == 1)
}

/// Locks the order's row if it is still pending: whoever closes an order looks at its payment
/// only after this, and a payment is only created under a share lock on the same row, so nothing
/// can start paying an order between the look and the close. `false` when it is not pending.
pub fn lock_pending(conn: &mut PgConnection, order_id: i64) -> QueryResult<bool> {
    orders::table
        .find(order_id)
        .filter(orders::status.eq("pending"))
        .for_update()
        .select(orders::id)
        .first::<i64>(conn)
        .optional()
        .map(|found| found.is_some())
}

/// Expires an unpaid order on which paying never began, and gives its stock back; `false` if it
/// was paid for, closed, or has a payment by the time its row is locked.
pub fn expire_if_abandoned(conn: &mut PgConnection, order_id: i64, now: DateTime<Utc>) -> QueryResult<bool> {
    if !lock_pending(conn, order_id)? {
        return Ok(false);
    }
    // A new statement, so a payment committed while we waited for the lock is seen.
    let paying: bool = diesel::select(diesel::dsl::exists(payments::table.filter(payments::order_id.eq(order_id)))).get_result(conn)?;
    if paying {
        return Ok(false);
    }
    close_unpaid(conn, order_id, "expired", now)
}

/// An order with its payment's status and attempt count, once paying has begun.
pub type OrderWithPayment = (Order, Option<PaymentStatus>, Option<i32>);

/// These orders, each with its payment's status and attempt count if paying has begun: one query.
pub fn find_many_with_payment(conn: &mut PgConnection, order_ids: &[i64]) -> QueryResult<Vec<OrderWithPayment>> {
    orders::table
        .left_join(payments::table)
        .filter(orders::id.eq_any(order_ids))
        .select((Order::as_select(), payments::status.nullable(), payments::attempts.nullable()))
        .load(conn)
}

/// Unpaid orders placed before `before` on which paying never began.
pub fn abandoned(conn: &mut PgConnection, before: DateTime<Utc>, limit: i64) -> QueryResult<Vec<i64>> {
    orders::table
        .left_join(payments::table)
        .filter(orders::status.eq("pending"))
        .filter(orders::created_at.lt(before))
        .filter(payments::id.is_null())
        .order(orders::created_at)
        .limit(limit)
        .select(orders::id)
        .load(conn)
}

#[derive(Debug, Clone, Queryable)]
pub struct ProductRow {
    pub id: i64,
    pub merchant_id: i64,
    pub merchant: String,
    pub name: String,
    pub price: BigDecimal,
    pub currency: Currency,
    pub stock: i32,
}

pub fn catalogue(conn: &mut PgConnection) -> QueryResult<Vec<ProductRow>> {
    products::table
        .inner_join(customers::table)
        .order((customers::name.asc(), products::name.asc()))
        .select((products::id, customers::id, customers::name, products::name, products::price, products::currency, products::stock))
        .load(conn)
}

/// What an order held, to order it again: (product, quantity).
pub fn items_of(conn: &mut PgConnection, order_id: i64) -> QueryResult<Vec<(i64, i32)>> {
    order_items::table.filter(order_items::order_id.eq(order_id)).order(order_items::id).select((order_items::product_id, order_items::quantity)).load(conn)
}

/// A merchant's product by name, created with this price and stock when it is missing (demo data
/// and first installs).
pub fn ensure_product(conn: &mut PgConnection, customer_id: i64, name: &str, price: BigDecimal, stock: i32) -> QueryResult<i64> {
    diesel::insert_into(products::table)
        .values((
            products::customer_id.eq(customer_id),
            products::name.eq(name),
            products::price.eq(price),
            products::currency.eq("USD"),
            products::stock.eq(stock),
        ))
        .on_conflict((products::customer_id, products::name))
        .do_nothing()
        .execute(conn)?;
    products::table
        .filter(products::customer_id.eq(customer_id).and(products::name.eq(name)))
        .select(products::id)
        .first(conn)
}
