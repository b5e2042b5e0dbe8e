//! Who calls: a user with the customers they are linked to, and revoked API tokens.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int8, Text};
use uuid::Uuid;

use crate::merchants::ids::Linked;
use crate::schema::{api_revoked_tokens, customers, user_customers};

/// Who is calling, with the customers they are linked to.
#[derive(Debug, Clone, QueryableByName)]
pub struct Principal {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub public_id: Uuid,
    #[diesel(sql_type = Array<Int8>)]
    pub customers: Vec<i64>,
    /// The customers' public ids, in the same order.
    #[diesel(sql_type = Array<diesel::sql_types::Uuid>)]
    pub customer_public: Vec<Uuid>,
    /// Those of `customers` the user is an owner of.
    #[diesel(sql_type = Array<Int8>)]
    pub owned: Vec<i64>,
    #[diesel(sql_type = Bool)]
    pub revoked: bool,
}

impl Principal {
    pub fn sees(&self, customer_id: i64) -> bool {
        self.customers.contains(&customer_id)
    }

    /// The customers the caller is linked to, with the ids the caller knows them by.
    pub fn linked(&self) -> Linked {
        Linked { ids: self.customers.clone(), public: self.customer_public.clone(), owned: self.owned.clone() }
    }
}

/// The user (by the id callers know), their links and whether this token was revoked — by its
/// `jti`, or because it was issued (`iat`, whole seconds) no later than the second its user
/// changed their password or signed out everywhere: one query, on every API request.
pub fn principal(conn: &mut PgConnection, user: Uuid, jti: Uuid, issued_at: i64) -> QueryResult<Option<Principal>> {
    diesel::sql_query(
        "SELECT u.id, u.public_id, u.email, u.name, \
             ARRAY(SELECT customer_id FROM user_customers WHERE user_id = u.id ORDER BY customer_id) AS customers, \
             ARRAY(SELECT c.public_id FROM user_customers l JOIN customers c ON c.id = l.customer_id \
                 WHERE l.user_id = u.id ORDER BY l.customer_id) AS customer_public, \
             ARRAY(SELECT customer_id FROM user_customers WHERE user_id = u.id AND role = 'owner') AS owned, \
             (EXISTS (SELECT 1 FROM api_revoked_tokens WHERE jti = $2) \
                 OR to_timestamp($3) <= date_trunc('second', u.tokens_valid_after)) IS TRUE AS revoked \
         FROM users u WHERE u.public_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(user)
    .bind::<diesel::sql_types::Uuid, _>(jti)
    .bind::<diesel::sql_types::Double, _>(issued_at as f64)
    .get_result(conn)
    .optional()
}

/// The customers a user is linked to.
pub fn links(conn: &mut PgConnection, user_id: i64) -> QueryResult<Linked> {
    let pairs = user_customers::table
        .inner_join(customers::table)
        .filter(user_customers::user_id.eq(user_id))
        .order(user_customers::customer_id)
        .select((user_customers::customer_id, customers::public_id, user_customers::role.eq("owner")))
        .load(conn)?;
    Ok(Linked::new(pairs))
}

pub fn revoke_token(conn: &mut PgConnection, jti: Uuid, user_id: i64, expires_at: DateTime<Utc>) -> QueryResult<()> {
    diesel::insert_into(api_revoked_tokens::table)
        .values((api_revoked_tokens::jti.eq(jti), api_revoked_tokens::user_id.eq(user_id), api_revoked_tokens::expires_at.eq(expires_at)))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(drop)
}
