//! The API's idempotency keys: claimed, answered, released and pruned; and the answers the API's
//! group commit stores with the payments it creates.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Int8, Text, Timestamptz};

use crate::orders::batches::ApiPaymentStart;
use crate::schema::api_idempotency_keys;

/// What an idempotency key says about a request that carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// First use (or a takeover after the earlier request's lock ran out): go ahead.
    Fresh,
    /// Done before: this is its answer.
    Replay { status: u16, body: String },
    /// The same key is on another request, still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Claims the key for this request, or says why not. Keys older than `expires_before` are
/// forgotten (Stripe keeps them 24 hours); a request in flight holds it until `lock_until`.
pub fn claim_key(
    conn: &mut PgConnection,
    user_id: i64,
    key: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
    lock_until: DateTime<Utc>,
    expires_before: DateTime<Utc>,
) -> QueryResult<KeyState> {
    conn.transaction(|conn| {
        let claimed = diesel::sql_query(
            "INSERT INTO api_idempotency_keys AS k (user_id, key, fingerprint, locked_until, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, locked_until = EXCLUDED.locked_until, \
                 created_at = EXCLUDED.created_at, status_code = NULL, response_body = NULL \
             WHERE k.created_at < $6",
        )
        .bind::<BigInt, _>(user_id)
        .bind::<Text, _>(key)
        .bind::<Text, _>(fingerprint)
        .bind::<Timestamptz, _>(lock_until)
        .bind::<Timestamptz, _>(now)
        .bind::<Timestamptz, _>(expires_before)
        .execute(conn)?;
        if claimed == 1 {
            return Ok(KeyState::Fresh);
        }
        let (stored, status, body, locked): (String, Option<i32>, Option<String>, Option<DateTime<Utc>>) = api_idempotency_keys::table
            .find((user_id, key))
            .select((
                api_idempotency_keys::fingerprint,
                api_idempotency_keys::status_code,
                api_idempotency_keys::response_body,
                api_idempotency_keys::locked_until,
            ))
            .for_update()
            .first(conn)?;
        if stored != fingerprint {
            return Ok(KeyState::Mismatch);
        }
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(KeyState::Replay { status: status as u16, body });
        }
        if locked.is_some_and(|l| l > now) {
            return Ok(KeyState::InFlight);
        }
        // The request that held it vanished before answering (nothing it did was committed
        // without its answer): this one takes over.
        diesel::update(api_idempotency_keys::table.find((user_id, key)))
            .set(api_idempotency_keys::locked_until.eq(lock_until))
            .execute(conn)?;
        Ok(KeyState::Fresh)
    })
}

/// Stores the answer under the key — in the same transaction as the work it answers for, when
/// there is work.
pub fn store_answer(conn: &mut PgConnection, user_id: i64, key: &str, status: u16, body: &str) -> QueryResult<()> {
    diesel::update(api_idempotency_keys::table.find((user_id, key)))
        .set((
            api_idempotency_keys::status_code.eq(i32::from(status)),
            api_idempotency_keys::response_body.eq(body),
            api_idempotency_keys::locked_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .map(drop)
}

/// Lets the key go: the answer is one a retry may change.
pub fn release_key(conn: &mut PgConnection, user_id: i64, key: &str) -> QueryResult<()> {
    diesel::delete(api_idempotency_keys::table.find((user_id, key)).filter(api_idempotency_keys::status_code.is_null()))
        .execute(conn)
        .map(drop)
}

pub fn prune_keys(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(api_idempotency_keys::table.filter(api_idempotency_keys::created_at.lt(before))).execute(conn)
}

/// A payment asked for through the API, everything about it decided before it is written —
/// its answer included.
#[derive(Debug, Clone)]
pub struct NewApiPayment {
    pub start: ApiPaymentStart,
    /// The idempotency key, its request's fingerprint, and the answer to store under it.
    pub key: String,
    pub fingerprint: String,
    pub answer: String,
}

#[derive(QueryableByName)]
struct Recorded {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Text)]
    response_body: String,
}

/// The API's fast path for a batch (see `intake`), first half: stores each payment's answer under
/// its idempotency key where the key is free, in one statement. Returns, in batch order, whether
/// each key was free; a payment whose key was taken is left for the general path. The caller
/// writes the payments whose keys were free in the same transaction, so an answer is never stored
/// without its rows.
pub fn record_answers(conn: &mut PgConnection, batch: &[&NewApiPayment]) -> QueryResult<Vec<bool>> {
    let column = |f: fn(&NewApiPayment) -> String| batch.iter().map(|p| f(p)).collect::<Vec<String>>();
    let recorded: Vec<Recorded> = diesel::sql_query(
        "INSERT INTO api_idempotency_keys (user_id, key, fingerprint, status_code, response_body, created_at) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::timestamptz[]) \
         ON CONFLICT DO NOTHING RETURNING user_id, key, response_body",
    )
    .bind::<Array<Int8>, _>(batch.iter().map(|p| p.start.user_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|p| p.key.clone()))
    .bind::<Array<Text>, _>(column(|p| p.fingerprint.clone()))
    .bind::<Array<diesel::sql_types::Integer>, _>(vec![201; batch.len()])
    .bind::<Array<Text>, _>(column(|p| p.answer.clone()))
    .bind::<Array<Timestamptz>, _>(batch.iter().map(|p| p.start.created_at).collect::<Vec<_>>())
    .load(conn)?;
    // Matched back by the (unique) answer: two requests of a batch may share a key.
    Ok(batch
        .iter()
        .map(|p| recorded.iter().any(|r| r.user_id == p.start.user_id && r.key == p.key && r.response_body == p.answer))
        .collect())
}
