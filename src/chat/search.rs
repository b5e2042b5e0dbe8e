//! Finding messages by any part of a word. One implementation today — PostgreSQL's trigram index
//! with `ILIKE` — behind a trait, so a team that outgrows it (relevance ranking, stemming, typo
//! tolerance, an index larger than one database's memory) can add Elasticsearch or OpenSearch as
//! a second implementation fed from the persister, without touching the routes.

use diesel::prelude::*;

use super::domain::SearchTerm;
use super::repo::{self, Message};

pub trait MessageSearch: Send + Sync {
    /// Messages of one chat holding the term, in number order, after `after`, at most `limit`.
    fn search(&self, conn: &mut PgConnection, chat_id: i64, term: &SearchTerm, after: i32, limit: i64) -> QueryResult<Vec<Message>>;
}

/// `pg_trgm` GIN index on the body, `ILIKE` with the wildcards escaped: exact substring matches,
/// any case, any script, no extra server.
pub struct PostgresSearch;

impl MessageSearch for PostgresSearch {
    fn search(&self, conn: &mut PgConnection, chat_id: i64, term: &SearchTerm, after: i32, limit: i64) -> QueryResult<Vec<Message>> {
        repo::search(conn, chat_id, term, after, limit)
    }
}
