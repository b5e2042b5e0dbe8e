//! Every query the chat area makes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::domain::{AppName, Token};
use crate::schema::chat_applications;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = chat_applications, check_for_backend(diesel::pg::Pg))]
pub struct Application {
    pub id: i64,
    pub token: String,
    pub name: String,
    pub chats_count: i32,
    pub created_at: DateTime<Utc>,
}

pub fn create_application(conn: &mut PgConnection, name: &AppName) -> QueryResult<Application> {
    diesel::insert_into(chat_applications::table)
        .values((chat_applications::token.eq(Token::generate().as_str()), chat_applications::name.eq(name.as_str())))
        .returning(Application::as_returning())
        .get_result(conn)
}

pub fn application(conn: &mut PgConnection, token: &Token) -> QueryResult<Option<Application>> {
    chat_applications::table
        .filter(chat_applications::token.eq(token.as_str()))
        .select(Application::as_select())
        .first(conn)
        .optional()
}

pub fn rename_application(conn: &mut PgConnection, token: &Token, name: &AppName, now: DateTime<Utc>) -> QueryResult<Option<Application>> {
    diesel::update(chat_applications::table.filter(chat_applications::token.eq(token.as_str())))
        .set((chat_applications::name.eq(name.as_str()), chat_applications::updated_at.eq(now)))
        .returning(Application::as_returning())
        .get_result(conn)
        .optional()
}

/// Applications in creation order: `limit` of them after the application `after` (a token), or
/// at `offset`. `None` when `after` names no application.
pub fn applications_page(conn: &mut PgConnection, after: Option<&Token>, offset: i64, limit: i64) -> QueryResult<Option<Vec<Application>>> {
    let mut query = chat_applications::table.select(Application::as_select()).order(chat_applications::id.asc()).into_boxed();
    if let Some(after) = after {
        let Some(from) = application(conn, after)? else { return Ok(None) };
        query = query.filter(chat_applications::id.gt(from.id));
    } else if offset > 0 {
        query = query.offset(offset);
    }
    query.limit(limit).load(conn).map(Some)
}
