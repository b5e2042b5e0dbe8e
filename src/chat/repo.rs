//! Every query the chat area makes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use diesel::sql_types::{BigInt, Integer, Text};

use super::domain::{AppName, Item, MessageBody, SearchTerm, Token};
use crate::schema::{chat_applications, chat_messages, chats};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = chat_applications, check_for_backend(diesel::pg::Pg))]
pub struct Application {
    pub id: i64,
    pub token: String,
    pub name: String,
    pub chats_count: i32,
    pub created_at: DateTime<Utc>,
    /// The user who made it; `None`: made anonymously.
    pub owner_id: Option<i64>,
}

pub fn create_application(conn: &mut PgConnection, name: &AppName, owner: Option<i64>) -> QueryResult<Application> {
    diesel::insert_into(chat_applications::table)
        .values((
            chat_applications::token.eq(Token::generate().as_str()),
            chat_applications::name.eq(name.as_str()),
            chat_applications::owner_id.eq(owner),
        ))
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

pub fn rename_application(conn: &mut PgConnection, id: i64, name: &AppName, now: DateTime<Utc>) -> QueryResult<Option<Application>> {
    diesel::update(chat_applications::table.find(id))
        .set((chat_applications::name.eq(name.as_str()), chat_applications::updated_at.eq(now)))
        .returning(Application::as_returning())
        .get_result(conn)
        .optional()
}

/// The owner's applications in creation order: `limit` of them after the application `after` (a
/// token of theirs), or at `offset`. `None` when `after` names none of theirs.
pub fn applications_page(conn: &mut PgConnection, owner: i64, after: Option<&Token>, offset: i64, limit: i64) -> QueryResult<Option<Vec<Application>>> {
    let mut query = chat_applications::table
        .filter(chat_applications::owner_id.eq(owner))
        .select(Application::as_select())
        .order(chat_applications::id.asc())
        .into_boxed();
    if let Some(after) = after {
        let Some(from) = application(conn, after)?.filter(|a| a.owner_id == Some(owner)) else { return Ok(None) };
        query = query.filter(chat_applications::id.gt(from.id));
    } else if offset > 0 {
        query = query.offset(offset);
    }
    query.limit(limit).load(conn).map(Some)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = chats, check_for_backend(diesel::pg::Pg))]
pub struct Chat {
    pub id: i64,
    pub number: i32,
    pub messages_count: i32,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = chat_messages, check_for_backend(diesel::pg::Pg))]
pub struct Message {
    pub number: i32,
    pub body: String,
}

/// Creates the application's next chat, synchronously: the application's row is locked while the
/// next number is read and used, so concurrent creates (in any process) number 1, 2, 3… with no
/// gap and no repeat, and the count moves in the same transaction. `None`: no such application.
///
/// The path creates take when Redis is away (or `CHAT_INTAKE=postgres`); with Redis, numbers
/// come from `INCR` and rows from the persister (`intake`).
pub fn create_chat(conn: &mut PgConnection, token: &Token, now: DateTime<Utc>) -> QueryResult<Option<Chat>> {
    conn.transaction(|conn| {
        let Some(app_id) = chat_applications::table
            .filter(chat_applications::token.eq(token.as_str()))
            .select(chat_applications::id)
            .for_update()
            .first::<i64>(conn)
            .optional()?
        else {
            return Ok(None);
        };
        let last: Option<i32> = chats::table.filter(chats::application_id.eq(app_id)).select(diesel::dsl::max(chats::number)).first(conn)?;
        let chat: Chat = diesel::insert_into(chats::table)
            .values((chats::application_id.eq(app_id), chats::number.eq(last.unwrap_or(0) + 1), chats::created_at.eq(now), chats::updated_at.eq(now)))
            .returning(Chat::as_returning())
            .get_result(conn)?;
        diesel::update(chat_applications::table.find(app_id))
            .set((chat_applications::chats_count.eq(chat_applications::chats_count + 1), chat_applications::updated_at.eq(now)))
            .execute(conn)?;
        Ok(Some(chat))
    })
}

/// The application's id, if the token names one.
pub fn application_id(conn: &mut PgConnection, token: &Token) -> QueryResult<Option<i64>> {
    chat_applications::table.filter(chat_applications::token.eq(token.as_str())).select(chat_applications::id).first(conn).optional()
}

/// The chat `number` of the application with this token.
pub fn chat(conn: &mut PgConnection, token: &Token, number: i32) -> QueryResult<Option<Chat>> {
    chats::table
        .inner_join(chat_applications::table)
        .filter(chat_applications::token.eq(token.as_str()).and(chats::number.eq(number)))
        .select(Chat::as_select())
        .first(conn)
        .optional()
}

/// Chats in number order, `limit` of them after number `after`. Numbers are dense (1, 2, 3… and
/// never deleted), so page `p` is simply "after (p − 1) × size": a keyset, not an OFFSET.
pub fn chats_page(conn: &mut PgConnection, application_id: i64, after: i32, limit: i64) -> QueryResult<Vec<Chat>> {
    chats::table
        .filter(chats::application_id.eq(application_id).and(chats::number.gt(after)))
        .order(chats::number.asc())
        .limit(limit)
        .select(Chat::as_select())
        .load(conn)
}

/// Posts the chat's next message, synchronously, under the chat's row lock (see `create_chat`).
/// `None`: no such application or chat.
pub fn create_message(conn: &mut PgConnection, token: &Token, chat_number: i32, body: &MessageBody, now: DateTime<Utc>) -> QueryResult<Option<Message>> {
    conn.transaction(|conn| {
        let application = chat_applications::table.filter(chat_applications::token.eq(token.as_str())).select(chat_applications::id);
        let Some(chat_id) = chats::table
            .filter(chats::application_id.eq_any(application).and(chats::number.eq(chat_number)))
            .select(chats::id)
            .for_update()
            .first::<i64>(conn)
            .optional()?
        else {
            return Ok(None);
        };
        let last: Option<i32> = chat_messages::table.filter(chat_messages::chat_id.eq(chat_id)).select(diesel::dsl::max(chat_messages::number)).first(conn)?;
        let message: Message = diesel::insert_into(chat_messages::table)
            .values((
                chat_messages::chat_id.eq(chat_id),
                chat_messages::number.eq(last.unwrap_or(0) + 1),
                chat_messages::body.eq(body.as_str()),
                chat_messages::created_at.eq(now),
                chat_messages::updated_at.eq(now),
            ))
            .returning(Message::as_returning())
            .get_result(conn)?;
        diesel::update(chats::table.find(chat_id))
            .set((chats::messages_count.eq(chats::messages_count + 1), chats::updated_at.eq(now)))
            .execute(conn)?;
        Ok(Some(message))
    })
}

pub fn chat_id(conn: &mut PgConnection, token: &Token, chat_number: i32) -> QueryResult<Option<i64>> {
    Ok(chat(conn, token, chat_number)?.map(|c| c.id))
}

pub fn message(conn: &mut PgConnection, chat_id: i64, number: i32) -> QueryResult<Option<Message>> {
    chat_messages::table
        .filter(chat_messages::chat_id.eq(chat_id).and(chat_messages::number.eq(number)))
        .select(Message::as_select())
        .first(conn)
        .optional()
}

pub fn messages_page(conn: &mut PgConnection, chat_id: i64, after: i32, limit: i64) -> QueryResult<Vec<Message>> {
    chat_messages::table
        .filter(chat_messages::chat_id.eq(chat_id).and(chat_messages::number.gt(after)))
        .order(chat_messages::number.asc())
        .limit(limit)
        .select(Message::as_select())
        .load(conn)
}

pub fn edit_message(conn: &mut PgConnection, chat_id: i64, number: i32, body: &MessageBody, now: DateTime<Utc>) -> QueryResult<Option<Message>> {
    diesel::update(chat_messages::table.filter(chat_messages::chat_id.eq(chat_id).and(chat_messages::number.eq(number))))
        .set((chat_messages::body.eq(body.as_str()), chat_messages::updated_at.eq(now)))
        .returning(Message::as_returning())
        .get_result(conn)
        .optional()
}

/// Messages of one chat whose body holds the term, in any case, in number order.
pub fn search(conn: &mut PgConnection, chat_id: i64, term: &SearchTerm, after: i32, limit: i64) -> QueryResult<Vec<Message>> {
    chat_messages::table
        .filter(chat_messages::chat_id.eq(chat_id).and(chat_messages::number.gt(after)))
        .filter(chat_messages::body.ilike(term.like_pattern()))
        .order(chat_messages::number.asc())
        .limit(limit)
        .select(Message::as_select())
        .load(conn)
}

/// Sets every `chats_count` and `messages_count` that differs from the rows it counts; returns
/// how many of each it repaired. The counts are kept in the transactions that add rows, so this
/// finds only drift (a hand edit, a bug), and says so.
pub fn reconcile_counts(conn: &mut PgConnection) -> QueryResult<(usize, usize)> {
    let apps = diesel::sql_query(
        "UPDATE chat_applications a SET chats_count = real.n, updated_at = now() \
         FROM (SELECT a2.id, count(c.id)::int AS n FROM chat_applications a2 LEFT JOIN chats c ON c.application_id = a2.id GROUP BY a2.id) real \
         WHERE a.id = real.id AND a.chats_count <> real.n",
    )
    .execute(conn)?;
    let chats = diesel::sql_query(
        "UPDATE chats c SET messages_count = real.n, updated_at = now() \
         FROM (SELECT c2.id, count(m.id)::int AS n FROM chats c2 LEFT JOIN chat_messages m ON m.chat_id = c2.id GROUP BY c2.id) real \
         WHERE c.id = real.id AND c.messages_count <> real.n",
    )
    .execute(conn)?;
    Ok((apps, chats))
}

/// The chat's latest `limit` messages, oldest first (as a conversation reads).
/// A message as the chat page shows it: with when it was sent (the API's shape has no time).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = chat_messages, check_for_backend(diesel::pg::Pg))]
pub struct SentMessage {
    pub number: i32,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// The chat's newest `limit` messages, oldest first.
pub fn latest_messages(conn: &mut PgConnection, chat_id: i64, limit: i64) -> QueryResult<Vec<SentMessage>> {
    let mut latest: Vec<SentMessage> = chat_messages::table
        .filter(chat_messages::chat_id.eq(chat_id))
        .order(chat_messages::number.desc())
        .limit(limit)
        .select(SentMessage::as_select())
        .load(conn)?;
    latest.reverse();
    Ok(latest)
}

/// The application's highest chat number PostgreSQL knows (0 for none).
pub fn highest_chat(conn: &mut PgConnection, application_id: i64) -> QueryResult<i32> {
    let top: Option<i32> = chats::table.filter(chats::application_id.eq(application_id)).select(diesel::dsl::max(chats::number)).first(conn)?;
    Ok(top.unwrap_or(0))
}

/// The chat's highest message number PostgreSQL knows (0 for none, or no such chat yet).
pub fn highest_message(conn: &mut PgConnection, application_id: i64, chat_number: i32) -> QueryResult<i32> {
    let top: Option<i32> = chat_messages::table
        .inner_join(chats::table)
        .filter(chats::application_id.eq(application_id).and(chats::number.eq(chat_number)))
        .select(diesel::dsl::max(chat_messages::number))
        .first(conn)?;
    Ok(top.unwrap_or(0))
}

// --- the intake's bookkeeping (see `intake`) ----------------------------------------------------

/// A server whose heartbeat is older than this is presumed gone.
pub const ALIVE_WITHIN_SECS: i64 = 3;

/// Records that this server wrote everything it accepted in the `ended` epoch.
pub fn record_drained(conn: &mut PgConnection, node: &str, ended: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE chat_nodes SET drained_epoch = $2 WHERE node = $1").bind::<Text, _>(node).bind::<Text, _>(ended).execute(conn).map(drop)
}

/// Writes items to PostgreSQL in one transaction, idempotent on (parent, number), moving the
/// counts by what was really inserted. A number that already holds a *different* message is a
/// numbering conflict: reported loudly, never swallowed.
pub fn write_items(conn: &mut PgConnection, items: &[Item]) -> QueryResult<()> {
    let mut chat_apps = Vec::new();
    let mut chat_numbers = Vec::new();
    let (mut m_apps, mut m_chats, mut m_numbers, mut m_bodies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match item {
            Item::Chat { app, number } => {
                chat_apps.push(*app);
                chat_numbers.push(*number);
            }
            Item::Message { app, chat, number, body } => {
                // A message's chat may not be written yet (another batch holds it): make it here.
                chat_apps.push(*app);
                chat_numbers.push(*chat);
                m_apps.push(*app);
                m_chats.push(*chat);
                m_numbers.push(*number);
                m_bodies.push(body.clone());
            }
        }
    }
    conn.transaction(|conn| {
        diesel::sql_query(
            "WITH input AS (SELECT DISTINCT * FROM unnest($1::bigint[], $2::int[]) AS i(app, number) ORDER BY 1, 2), \
             made AS (INSERT INTO chats (application_id, number) SELECT app, number FROM input ON CONFLICT DO NOTHING RETURNING application_id), \
             counted AS (SELECT application_id, count(*)::int AS n FROM made GROUP BY 1) \
             UPDATE chat_applications a SET chats_count = a.chats_count + counted.n, updated_at = now() FROM counted WHERE a.id = counted.application_id",
        )
        .bind::<diesel::sql_types::Array<BigInt>, _>(&chat_apps)
        .bind::<diesel::sql_types::Array<Integer>, _>(&chat_numbers)
        .execute(conn)?;
        if m_apps.is_empty() {
            return Ok(());
        }
        #[derive(QueryableByName)]
        struct Conflict {
            #[diesel(sql_type = BigInt)]
            app: i64,
            #[diesel(sql_type = Integer)]
            chat: i32,
            #[diesel(sql_type = Integer)]
            number: i32,
        }
        let conflicts: Vec<Conflict> = diesel::sql_query(
            "WITH input AS (SELECT i.*, c.id AS chat_id FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[]) AS i(app, chat, number, body) \
                 JOIN chats c ON c.application_id = i.app AND c.number = i.chat ORDER BY c.id, i.number), \
             made AS (INSERT INTO chat_messages (chat_id, number, body) SELECT chat_id, number, body FROM input ON CONFLICT DO NOTHING RETURNING chat_id, number), \
             counted AS (SELECT chat_id, count(*)::int AS n FROM made GROUP BY 1), \
             bumped AS (UPDATE chats c SET messages_count = c.messages_count + counted.n, updated_at = now() FROM counted WHERE c.id = counted.chat_id) \
             SELECT input.app, input.chat, input.number FROM input JOIN chat_messages m ON m.chat_id = input.chat_id AND m.number = input.number \
             WHERE m.body <> input.body AND NOT EXISTS (SELECT 1 FROM made WHERE made.chat_id = input.chat_id AND made.number = input.number)",
        )
        .bind::<diesel::sql_types::Array<BigInt>, _>(&m_apps)
        .bind::<diesel::sql_types::Array<Integer>, _>(&m_chats)
        .bind::<diesel::sql_types::Array<Integer>, _>(&m_numbers)
        .bind::<diesel::sql_types::Array<Text>, _>(&m_bodies)
        .load(conn)?;
        for c in conflicts {
            log::error!("chat numbering conflict: application {} chat {} message {} already holds another message", c.app, c.chat, c.number);
        }
        Ok(())
    })
}

/// Which of these items PostgreSQL has: one query for the chats, one for the messages.
pub fn stored(conn: &mut PgConnection, items: &[Item]) -> QueryResult<Vec<Item>> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Integer)]
        at: i32,
    }
    let (mut apps, mut chats, mut numbers, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let (app, chat, number) = match item {
            Item::Chat { app, number } => (*app, *number, 0),
            Item::Message { app, chat, number, .. } => (*app, *chat, *number),
        };
        apps.push(app);
        chats.push(chat);
        numbers.push(number);
        at.push(i as i32);
    }
    // `number` 0 stands for the chat itself; messages are numbered from 1.
    let found: Vec<Found> = diesel::sql_query(
        "SELECT i.at FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[]) AS i(app, chat, number, at) \
         JOIN chats c ON c.application_id = i.app AND c.number = i.chat \
         WHERE i.number = 0 OR EXISTS (SELECT 1 FROM chat_messages m WHERE m.chat_id = c.id AND m.number = i.number)",
    )
    .bind::<diesel::sql_types::Array<BigInt>, _>(&apps)
    .bind::<diesel::sql_types::Array<Integer>, _>(&chats)
    .bind::<diesel::sql_types::Array<Integer>, _>(&numbers)
    .bind::<diesel::sql_types::Array<Integer>, _>(&at)
    .load(conn)?;
    Ok(found.into_iter().map(|f| items[f.at as usize].clone()).collect())
}

pub fn heartbeat(conn: &mut PgConnection, node: &str, synchronous: bool) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO chat_nodes (node, heartbeat_at, synchronous) VALUES ($1, now(), $2) \
         ON CONFLICT (node) DO UPDATE SET heartbeat_at = now(), synchronous = chat_nodes.synchronous AND $2",
    )
    .bind::<Text, _>(node)
    .bind::<diesel::sql_types::Bool, _>(synchronous)
    .execute(conn)
    .map(drop)
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    yes: bool,
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

pub fn someone_drained(conn: &mut PgConnection, epoch: &str) -> QueryResult<bool> {
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM chat_nodes WHERE drained_epoch = $1) AS yes")
        .bind::<Text, _>(epoch)
        .get_result::<Flag>(conn)
        .map(|f| f.yes)
}

pub fn everyone_drained(conn: &mut PgConnection, ended: &str) -> QueryResult<bool> {
    diesel::sql_query(format!(
        "SELECT NOT EXISTS (SELECT 1 FROM chat_nodes WHERE heartbeat_at > now() - interval '{ALIVE_WITHIN_SECS} seconds' \
             AND drained_epoch IS DISTINCT FROM $1) AS yes"
    ))
    .bind::<Text, _>(ended)
    .get_result::<Flag>(conn)
    .map(|f| f.yes)
}

pub fn open_epoch(conn: &mut PgConnection) -> QueryResult<Option<String>> {
    diesel::sql_query("SELECT value FROM chat_epochs WHERE ended_at IS NULL").get_result::<Value>(conn).optional().map(|v| v.map(|v| v.value))
}

/// Enters PostgreSQL numbering, unless a new epoch has started meanwhile; under the same lock as
/// `start_epoch`, so the two never overlap.
pub fn enter_synchronous(conn: &mut PgConnection, node: &str, ended: &str) -> QueryResult<bool> {
    conn.transaction(|conn| {
        diesel::sql_query("LOCK TABLE chat_epochs IN SHARE ROW EXCLUSIVE MODE").execute(conn)?;
        let open = open_epoch(conn)?;
        if open.as_deref().is_some_and(|o| o != ended) {
            return Ok(false);
        }
        diesel::sql_query("UPDATE chat_nodes SET synchronous = true WHERE node = $1").bind::<Text, _>(node).execute(conn)?;
        Ok(true)
    })
}

/// Ends `ended` and opens a new epoch, if nobody has and no live server numbers in PostgreSQL;
/// returns the open epoch (new, or one another server started).
pub fn start_epoch(conn: &mut PgConnection, ended: &str) -> QueryResult<Option<String>> {
    conn.transaction(|conn| {
        diesel::sql_query("LOCK TABLE chat_epochs IN SHARE ROW EXCLUSIVE MODE").execute(conn)?;
        let open = open_epoch(conn)?;
        if let Some(open) = &open {
            if open != ended {
                return Ok(Some(open.clone()));
            }
        }
        let numbering: bool = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM chat_nodes WHERE synchronous AND heartbeat_at > now() - interval '{ALIVE_WITHIN_SECS} seconds') AS yes"
        ))
        .get_result::<Flag>(conn)?
        .yes;
        if numbering {
            return Ok(None);
        }
        diesel::sql_query("UPDATE chat_epochs SET ended_at = now() WHERE ended_at IS NULL").execute(conn)?;
        let epoch = super::domain::Token::generate().as_str().to_string();
        diesel::sql_query("INSERT INTO chat_epochs (value) VALUES ($1)").bind::<Text, _>(&epoch).execute(conn)?;
        Ok(Some(epoch))
    })
}
