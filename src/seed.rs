//! Demo data for `make run`: safe to load again and again (it only adds what is missing).

use crate::merchants::domain::Role;
use bigdecimal::BigDecimal;
use diesel::prelude::*;
use std::str::FromStr;

use crate::auth::repo::{ensure as ensure_user, NewUser};
use crate::orders::{repo as orders, OrderError};
use crate::schema::{customers, orders as orders_table};

pub const DEMO_PASSWORD: &str = "agora-demo";
pub const DEMO_USERS: [(&str, &str, bool); 3] =
    [("alice@example.com", "Alice", false), ("bob@example.com", "Bob", false), ("admin@example.com", "Ada (admin)", true)];

/// Merchants' staff, each linked to the merchants named (by catalogue index) in a role: each
/// merchant's owner, and finance, a member of both (sees and refunds, manages no staff). The
/// README's demo-login table lists them.
pub const DEMO_STAFF: [(&str, &str, &[usize], Role); 3] = [
    ("books@example.com", "Nora (Northwind Books)", &[0], Role::Owner),
    ("coffee@example.com", "Arlo (Acme Coffee)", &[1], Role::Owner),
    ("finance@example.com", "Fay (finance, both merchants)", &[0, 1], Role::Member),
];

/// A merchant and its products: name, price, stock.
type Merchant = (&'static str, &'static [(&'static str, &'static str, i32)]);

const CATALOGUE: [Merchant; 2] = [
    ("Northwind Books", &[("The Rust Programming Language", "39.99", 50), ("Designing Data-Intensive Applications", "45.50", 30), ("Bookmark", "2.25", 500)]),
    ("Acme Coffee Roasters", &[("House Blend 1kg", "24.00", 80), ("Espresso Cups (set of 4)", "18.75", 40), ("Pour-over Kettle", "64.90", 12)]),
];

fn ensure_customer(conn: &mut PgConnection, name: &str) -> QueryResult<i64> {
    let found = customers::table.filter(customers::name.eq(name)).order(customers::id).select(customers::id).first(conn).optional()?;
    match found {
        Some(id) => Ok(id),
        None => diesel::insert_into(customers::table).values(customers::name.eq(name)).returning(customers::id).get_result(conn),
    }
}

#[derive(Debug, Default)]
pub struct SeedReport {
    pub users: usize,
    pub orders_created: usize,
    pub payments_created: usize,
    pub comments_created: usize,
    /// The demo chat application's token (printed by `make run`).
    pub chat_token: String,
}

pub fn load(conn: &mut PgConnection) -> Result<SeedReport, OrderError> {
    let mut catalogue = Vec::new();
    for (merchant, items) in CATALOGUE {
        let customer_id = ensure_customer(conn, merchant)?;
        let ids = items
            .iter()
            .map(|(name, price, stock)| orders::ensure_product(conn, customer_id, name, BigDecimal::from_str(price).expect("catalogue prices are decimals"), *stock))
            .collect::<QueryResult<Vec<i64>>>()?;
        catalogue.push(ids);
    }
    let mut report = SeedReport::default();
    for (i, (email, name, is_admin)) in DEMO_USERS.iter().enumerate() {
        let user_id = ensure_user(conn, &NewUser { email, name, password: DEMO_PASSWORD, is_admin: *is_admin })?;
        report.users += 1;
        let has_orders: bool = diesel::select(diesel::dsl::exists(
            orders_table::table.filter(orders_table::user_id.eq(user_id)),
        ))
        .get_result(conn)?;
        if has_orders || *is_admin {
            continue;
        }
        // A few unpaid orders of different sizes, from both merchants.
        let books = &catalogue[0];
        let coffee = &catalogue[1];
        let baskets: Vec<Vec<(i64, i32)>> = vec![
            vec![(books[0], 1), (books[2], 2)],
            vec![(coffee[0], 2), (coffee[1], 1)],
            vec![(books[1], 1)],
            vec![(coffee[2], 1), (coffee[0], 1), (coffee[1], 2)],
        ];
        for basket in baskets.iter().skip(i % 2) {
            orders::create(conn, user_id, basket, i64::MAX)?; // demo data, not a shopper: no cap
            report.orders_created += 1;
        }
    }
    let merchants: Vec<i64> = CATALOGUE.iter().map(|(name, _)| ensure_customer(conn, name)).collect::<QueryResult<_>>()?;
    for (email, name, links, role) in DEMO_STAFF {
        let user_id = ensure_user(conn, &NewUser { email, name, password: DEMO_PASSWORD, is_admin: false })?;
        report.users += 1;
        for at in links {
            crate::merchants::repo::link(conn, user_id, merchants[*at], role)?;
        }
    }
    report.payments_created = crate::orders::demo::payment_history(conn, &merchants)?;
    report.comments_created = seed_discussions(conn)?;
    report.chat_token = seed_chat(conn)?;
    Ok(report)
}


const WORDS: [&str; 24] = [
    "payments", "idempotency", "retry", "cache", "rust", "postgres", "lock", "queue", "worker", "fragment", "thread",
    "latency", "backoff", "ledger", "merchant", "order", "stock", "breaker", "lease", "version", "key", "row", "commit",
    "replay",
];

fn sentence(seed: usize) -> String {
    let len = 6 + seed % 11;
    let words: Vec<&str> = (0..len).map(|i| WORDS[(seed * 7 + i * 13 + i * i) % WORDS.len()]).collect();
    let mut text = words.join(" ");
    text[..1].make_ascii_uppercase();
    text.push('.');
    text
}

/// Two posts: a short discussion, and a deep, wide one (2 top-level comments, 3 replies to each,
/// six levels: 728 comments) that shows the caching and the "continue this thread" links.
fn seed_discussions(conn: &mut PgConnection) -> Result<usize, OrderError> {
    use crate::schema::{posts, users};
    use crate::threads::{repo as threads, CommentBody};
    let has_posts: bool = diesel::select(diesel::dsl::exists(posts::table.select(posts::id))).get_result(conn)?;
    if has_posts {
        return Ok(0);
    }
    let people: Vec<i64> = users::table.order(users::id).select(users::id).load(conn)?;
    let author = |i: usize| people[i % people.len()];
    let small = threads::create_post(conn, author(0), "Welcome to Agora", &CommentBody::parse("Say hello, ask questions, tell us what to build next.").unwrap())?;
    let mut created = 0;
    let hello = threads::add_comment(conn, small, None, author(1), &CommentBody::parse("Hello! Paying was quick.").unwrap())?.map(|c| c.id);
    threads::add_comment(conn, small, hello, author(0), &CommentBody::parse("Glad to hear it — and it only charged once?").unwrap())?;
    created += 2;
    let big = threads::create_post(
        conn,
        author(2),
        "How do you make a payment happen exactly once?",
        &CommentBody::parse("Double clicks, network retries and re-run jobs all ask to charge again. What works for you?").unwrap(),
    )?;
    let mut level: Vec<Option<i64>> = vec![None];
    for depth in 0..6 {
        let fan_out = if depth == 0 { 2 } else { 3 };
        let mut next = Vec::new();
        for parent in &level {
            for _ in 0..fan_out {
                let body = CommentBody::parse(&sentence(created)).unwrap();
                let id = threads::add_comment(conn, big, *parent, author(created), &body)?.map(|c| c.id);
                next.push(id);
                created += 1;
            }
        }
        level = next;
    }
    Ok(created)
}

const DEMO_CHAT: &str = "Agora demo chat";

/// A chat application of Alice's with three chats and 3,000 messages (numbered, counted), made once.
fn seed_chat(conn: &mut PgConnection) -> Result<String, OrderError> {
    use crate::schema::chat_applications;
    let existing: Option<String> = chat_applications::table
        .filter(chat_applications::name.eq(DEMO_CHAT))
        .order(chat_applications::id)
        .select(chat_applications::token)
        .first(conn)
        .optional()?;
    if let Some(token) = existing {
        return Ok(token);
    }
    let name = crate::chat::domain::app_name(&serde_json::json!({ "name": DEMO_CHAT })).expect("a valid name");
    // Alice's, so that signed in as her the list of applications shows it.
    let owner = crate::auth::repo::find_by_email(conn, DEMO_USERS[0].0)?.map(|u| u.id);
    let app = crate::chat::repo::create_application(conn, &name, owner)?;
    conn.transaction(|conn| {
        diesel::sql_query(
            "WITH made AS (INSERT INTO chats (application_id, number, messages_count) \
                 SELECT $1, n, 1000 FROM generate_series(1, 3) n RETURNING id, number) \
             INSERT INTO chat_messages (chat_id, number, body, created_at) \
             SELECT made.id, m, $2[1 + (m * 7 + made.number) % array_length($2, 1)], \
                 now() - make_interval(mins => 1000 - m) \
             FROM made, generate_series(1, 1000) m",
        )
        .bind::<diesel::sql_types::BigInt, _>(app.id)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(CHAT_LINES.to_vec())
        .execute(conn)?;
        diesel::update(chat_applications::table.find(app.id)).set(chat_applications::chats_count.eq(3)).execute(conn)
    })?;
    Ok(app.token)
}

const CHAT_LINES: [&str; 8] = [
    "Has anyone tried the new espresso cups?",
    "Shipping to Copenhagen took two days",
    "مرحبا! هل وصل الطلب؟",
    "Refund arrived, thanks for the quick help",
    "Which kettle works best for pour-over?",
    "The Rust book is back in stock",
    "50% off_today only — is that real?",
    "Order placed, waiting for the confirmation",
];
