//! Who calls: a user with the customers they are linked to, and revoked API tokens.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int8, Text};
use uuid::Uuid;

use crate::schema::{
    api_revoked_tokens, user_customers,
};

/// Who is calling, with the customers they are linked to.
#[derive(Debug, Clone, QueryableByName)]
pub struct Principal {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Array<Int8>)]
    pub customers: Vec<i64>,
    #[diesel(sql_type = Bool)]
    pub revoked: bool,
}

impl Principal {
    pub fn sees(&self, customer_id: i64) -> bool {
        self.customers.contains(&customer_id)
    }
}

/// The user, their links and whether this token was revoked: one query, on every API request.
pub fn principal(conn: &mut PgConnection, user_id: i64, jti: Uuid) -> QueryResult<Option<Principal>> {
    diesel::sql_query(
        "SELECT u.id, u.email, u.name, \
             ARRAY(SELECT customer_id FROM user_customers WHERE user_id = u.id ORDER BY customer_id) AS customers, \
             EXISTS (SELECT 1 FROM api_revoked_tokens WHERE jti = $2) AS revoked \
         FROM users u WHERE u.id = $1",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<diesel::sql_types::Uuid, _>(jti)
    .get_result(conn)
    .optional()
}

/// The customers a user is linked to.
pub fn links(conn: &mut PgConnection, user_id: i64) -> QueryResult<Vec<i64>> {
    user_customers::table.filter(user_customers::user_id.eq(user_id)).order(user_customers::customer_id).select(user_customers::customer_id).load(conn)
}

pub fn revoke_token(conn: &mut PgConnection, jti: Uuid, user_id: i64, expires_at: DateTime<Utc>) -> QueryResult<()> {
    diesel::insert_into(api_revoked_tokens::table)
        .values((api_revoked_tokens::jti.eq(jti), api_revoked_tokens::user_id.eq(user_id), api_revoked_tokens::expires_at.eq(expires_at)))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(drop)
}
