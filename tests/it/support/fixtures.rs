//! Rows that tests need, made through the app's own functions where it has them.

use agora::schema::{customers, products, users};
use diesel::prelude::*;
use std::sync::OnceLock;

pub const PASSWORD: &str = "correct horse battery";

/// Hashing is slow on purpose; one hash serves every test user.
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| agora::auth::password::hash(PASSWORD))
}

pub fn user(conn: &mut PgConnection, email: &str) -> i64 {
    diesel::insert_into(users::table)
        .values((users::email.eq(email), users::name.eq(email.split('@').next().unwrap()), users::password_hash.eq(password_hash())))
        .returning(users::id)
        .get_result(conn)
        .unwrap()
}

/// A merchant with `n` products priced 1.25, 2.50, 3.75, …
pub fn catalogue(conn: &mut PgConnection, n: usize) -> Vec<i64> {
    let merchant: i64 = diesel::insert_into(customers::table)
        .values(customers::name.eq(format!("Merchant {}", uuid::Uuid::new_v4())))
        .returning(customers::id)
        .get_result(conn)
        .unwrap();
    (1..=n)
        .map(|i| {
            let price = bigdecimal::BigDecimal::from(125 * i as i64) / bigdecimal::BigDecimal::from(100);
            diesel::insert_into(products::table)
                .values((
                    products::customer_id.eq(merchant),
                    products::name.eq(format!("Product {i}")),
                    products::price.eq(price),
                    products::currency.eq("USD"),
                    products::stock.eq(1000),
                ))
                .returning(products::id)
                .get_result(conn)
                .unwrap()
        })
        .collect()
}

/// An unpaid order with one of each product (quantity 2 for every other one).
pub fn order(conn: &mut PgConnection, user_id: i64, products: &[i64]) -> i64 {
    let items: Vec<(i64, i32)> = products.iter().enumerate().map(|(i, p)| (*p, 1 + (i % 2) as i32)).collect();
    agora::orders::repo::create(conn, user_id, &items, i64::MAX).unwrap()
}

pub fn order_total(conn: &mut PgConnection, order_id: i64) -> bigdecimal::BigDecimal {
    agora::schema::orders::table.find(order_id).select(agora::schema::orders::total).first(conn).unwrap()
}

pub fn order_status(conn: &mut PgConnection, order_id: i64) -> String {
    agora::schema::orders::table.find(order_id).select(agora::schema::orders::status).first(conn).unwrap()
}

pub fn payment_count(conn: &mut PgConnection) -> i64 {
    agora::schema::payments::table.count().get_result(conn).unwrap()
}

pub fn make_admin(conn: &mut PgConnection, email: &str) -> i64 {
    let id = user(conn, email);
    diesel::update(users::table.find(id)).set(users::is_admin.eq(true)).execute(conn).unwrap();
    id
}

pub fn post(conn: &mut PgConnection, user_id: i64, title: &str) -> i64 {
    agora::threads::repo::create_post(conn, user_id, title, &agora::threads::CommentBody::parse("Post body.").unwrap()).unwrap()
}

pub fn comment(conn: &mut PgConnection, post_id: i64, parent: Option<i64>, user_id: i64, body: &str) -> i64 {
    let body = agora::threads::CommentBody::parse(body).unwrap();
    agora::threads::repo::add_comment(conn, post_id, parent, user_id, &body).unwrap().expect("post and parent exist").id
}

/// `roots` top-level comments, each with `fan_out` replies per level, `levels` levels deep.
/// Returns the ids level by level.
pub fn discussion(conn: &mut PgConnection, post_id: i64, user_id: i64, roots: usize, fan_out: usize, levels: usize) -> Vec<Vec<i64>> {
    let mut all: Vec<Vec<i64>> = Vec::new();
    let mut parents: Vec<Option<i64>> = vec![None];
    for level in 0..levels {
        let n = if level == 0 { roots } else { fan_out };
        let ids: Vec<i64> = parents
            .iter()
            .flat_map(|p| (0..n).map(move |i| (*p, i)))
            .map(|(parent, i)| comment(conn, post_id, parent, user_id, &format!("level {level} reply {i}")))
            .collect();
        parents = ids.iter().map(|id| Some(*id)).collect();
        all.push(ids);
    }
    all
}

/// The key the order's payment is charged under at the gateway.
pub fn gateway_key(conn: &mut PgConnection, order_id: i64) -> String {
    use agora::schema::payments;
    payments::table.filter(payments::order_id.eq(order_id)).select(payments::gateway_key).first(conn).unwrap()
}

/// A merchant (customer) with these users linked to it as its owners.
pub fn merchant(conn: &mut PgConnection, name: &str, users: &[i64]) -> i64 {
    use agora::schema::user_customers;
    let id: i64 = diesel::insert_into(customers::table).values(customers::name.eq(name)).returning(customers::id).get_result(conn).unwrap();
    for user in users {
        diesel::insert_into(user_customers::table)
            .values((user_customers::user_id.eq(user), user_customers::customer_id.eq(id), user_customers::role.eq("owner")))
            .execute(conn)
            .unwrap();
    }
    id
}

/// Two merchants with one staff member each: alice@north.test works for `north_name`,
/// bob@south.test for South. Returns (north, south).
pub fn two_merchants(conn: &mut PgConnection, north_name: &str) -> (i64, i64) {
    let alice = user(conn, "alice@north.test");
    let bob = user(conn, "bob@south.test");
    (merchant(conn, north_name, &[alice]), merchant(conn, "South", &[bob]))
}

/// The id the merchants' API shows for this customer (`cus_…`).
pub fn customer_public_id(conn: &mut PgConnection, id: i64) -> String {
    let public: uuid::Uuid = customers::table.find(id).select(customers::public_id).first(conn).unwrap();
    agora::merchants::ids::CUSTOMER.show(public)
}

/// The id the merchants' API shows for this user (`usr_…`).
pub fn user_public_id(conn: &mut PgConnection, id: i64) -> String {
    let public: uuid::Uuid = users::table.find(id).select(users::public_id).first(conn).unwrap();
    agora::merchants::ids::USER.show(public)
}

/// A user's key, by email.
pub fn user_id(conn: &mut PgConnection, email: &str) -> i64 {
    users::table.filter(users::email.eq(email)).select(users::id).first(conn).unwrap()
}
