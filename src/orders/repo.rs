//! Every query the orders area makes.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::OrderError;
use crate::payments::PaymentStatus;
use crate::schema::{customers, order_items, orders, payments, products};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub customer_id: i64,
    pub status: String,
    pub total: BigDecimal,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// An order with its merchant's name and, once paying has begun, its payment.
#[derive(Debug, Clone, Queryable)]
pub struct OrderSummary {
    pub order: Order,
    pub merchant: String,
    pub payment_reference: Option<Uuid>,
    pub payment_status: Option<PaymentStatus>,
}

#[derive(Debug, Clone, Queryable)]
pub struct CheckoutLine {
    pub product: String,
    pub quantity: i32,
    pub unit_price: BigDecimal,
}

/// The order's owner only: someone else's order is indistinguishable from a missing one.
pub fn find_summary(conn: &mut PgConnection, user_id: i64, order_id: i64) -> QueryResult<Option<OrderSummary>> {
    orders::table
        .inner_join(customers::table)
        .left_join(payments::table)
        .filter(orders::id.eq(order_id).and(orders::user_id.eq(user_id)))
        .select((Order::as_select(), customers::name, payments::reference.nullable(), payments::status.nullable()))
        .first(conn)
        .optional()
}

pub fn lines(conn: &mut PgConnection, order_id: i64) -> QueryResult<Vec<CheckoutLine>> {
    order_items::table
        .inner_join(products::table)
        .filter(order_items::order_id.eq(order_id))
        .order(order_items::id.asc())
        .select((products::name, order_items::quantity, order_items::unit_price))
        .load(conn)
}

/// The user's latest orders, newest first.
pub fn recent_for_user(conn: &mut PgConnection, user_id: i64, limit: i64) -> QueryResult<Vec<OrderSummary>> {
    orders::table
        .inner_join(customers::table)
        .left_join(payments::table)
        .filter(orders::user_id.eq(user_id))
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(limit)
        .select((Order::as_select(), customers::name, payments::reference.nullable(), payments::status.nullable()))
        .load(conn)
}

/// Places an order at today's prices, in one transaction. Stock is not touched here.
pub fn create(conn: &mut PgConnection, user_id: i64, items: &[(i64, i32)]) -> Result<i64, OrderError> {
    if items.is_empty() {
        return Err(OrderError::Empty);
    }
    if items.iter().any(|(_, q)| !(1..=1000).contains(q)) {
        return Err(OrderError::BadQuantity);
    }
    conn.transaction(|conn| {
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        let found: Vec<(i64, i64, BigDecimal, String)> = products::table
            .filter(products::id.eq_any(&ids))
            .select((products::id, products::customer_id, products::price, products::currency))
            .load(conn)?;
        let mut total = BigDecimal::from(0);
        let mut merchant = None;
        let mut rows = Vec::with_capacity(items.len());
        for (product_id, quantity) in items {
            let (_, customer_id, price, currency) =
                found.iter().find(|p| p.0 == *product_id).ok_or(OrderError::UnknownProduct(*product_id))?;
            match merchant {
                None => merchant = Some((*customer_id, currency.clone())),
                Some((m, _)) if m != *customer_id => return Err(OrderError::MixedMerchants),
                Some(_) => {}
            }
            total += price * BigDecimal::from(*quantity);
            rows.push((*product_id, *quantity, price.clone()));
        }
        let (customer_id, currency) = merchant.expect("at least one item");
        let order_id: i64 = diesel::insert_into(orders::table)
            .values((
                orders::user_id.eq(user_id),
                orders::customer_id.eq(customer_id),
                orders::total.eq(total),
                orders::currency.eq(currency),
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
