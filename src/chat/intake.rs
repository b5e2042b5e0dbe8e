//! Chats and messages accepted at Redis speed and never lost (issue 10; `CHAT_INTAKE=redis`).
//!
//! A create is one Lua call: `INCR` the parent's counter and `XADD` the item to a stream, so the
//! number and the payload are recorded together; the request is answered at once, without SQL. A
//! persister (a consumer group, one consumer per server) writes the stream to PostgreSQL in
//! batches, idempotent on (parent, number), and acknowledges after commit; entries a dead
//! consumer held are claimed by another.
//!
//! Redis can lose what it holds (flushed, restarted empty) or be out of reach, and PostgreSQL
//! alone cannot say which numbers were already handed out. So:
//! - every server keeps what it accepted in an in-process *outbox* until it is in PostgreSQL;
//! - counters belong to an *epoch* (a random value in Redis and in `chat_epochs`). Anything odd —
//!   Redis unreachable, the epoch key missing or changed, another server having given up on the
//!   epoch — ends it for this server: it stops accepting, writes its outbox to PostgreSQL and
//!   records that it has (`chat_nodes.drained_epoch`);
//! - a new epoch starts only when every live server (fresh heartbeat) has drained, none is
//!   numbering in PostgreSQL, and the stream holds nothing unpersisted. Its counters start lazily
//!   from PostgreSQL's highest numbers, which are complete by then;
//! - while Redis is out of reach, once every live server has drained, creates number in
//!   PostgreSQL under the parent's row lock (`repo::create_chat`, `repo::create_message`);
//!   entering that mode and starting an epoch lock the same row, so they never overlap.
//!
//! What this cannot cover: items accepted by a server that dies at the same moment Redis loses
//! its stream.

use diesel::prelude::*;
use redis::streams::{StreamId, StreamReadReply};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::limits::RateCell;
use super::repo;
use crate::cache::{Cache, CacheError};
use crate::db::PgPool;

pub const STREAM: &str = "chat:stream";
pub const GROUP: &str = "chat-persisters";
const EPOCH_KEY: &str = "chat:epoch";

pub use super::domain::Item;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Numbers come from this epoch's Redis counters.
    Accepting(String),
    /// The epoch ended (or none is known): drain, then wait for a new one.
    Recovering { ended: String, drained: bool },
    /// Redis is out of reach and every live server has drained: number in PostgreSQL.
    Synchronous { ended: String },
}

/// How a create is to be made right now.
pub enum Route {
    Redis(String),
    Postgres,
    /// Neither, for a moment (a loss is being recovered from): 503 with `Retry-After`.
    Wait,
}

/// Why an accept did not give a number.
#[derive(Debug)]
pub enum Refused {
    /// The parent's counter does not exist in this epoch: start it from PostgreSQL's maximum.
    NeedFloor,
    /// The epoch is over (or Redis is unreachable): try the other routes.
    EpochEnded,
    /// Redis did not answer in time: the item may have been accepted, so it is not tried again.
    Unanswered,
    /// The chat has no counter in this epoch: whether it exists is PostgreSQL's to say.
    AskPostgres,
    /// No chat with that number was ever issued.
    NoSuchChat,
    /// The token's rate limit is spent; the cell's theoretical arrival time.
    Limited(f64),
    /// The client has missed too often; ms until it may try again.
    Guessing(i64),
}

pub struct ChatIntake {
    cache: Cache,
    pool: PgPool,
    node: String,
    phase: Mutex<Phase>,
    outbox: Mutex<Vec<(Item, Instant)>>,
    /// Held (shared) by every PostgreSQL-numbered create; leaving that mode takes it exclusively.
    synchronous: RwLock<()>,
    group_ready: std::sync::atomic::AtomicBool,
    last_claim: Mutex<Instant>,
    /// Since when Redis has not answered in this epoch (`None`: it answers). A Redis that says
    /// the epoch is gone ends the epoch at once; one that does not answer ends it only after
    /// `UNANSWERED_GRACE`: a command that misses its deadline on a busy machine is not lost state.
    unanswered_since: Mutex<Option<Instant>>,
    /// How long a consumer may hold entries silently before another claims them.
    claim_idle: Mutex<Duration>,
    /// Notified after every keeper round and every persisted batch: what tests wait on.
    changed: crate::jobs::Wake,
}

const ACK_AND_DELETE: &str = r#"
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return redis.call('XDEL', KEYS[1], unpack(ids))
"#;

/// Creates the consumer group (and the stream) unless they exist, without an error reply.
const ENSURE_GROUP: &str = r#"
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return 1
"#;

// KEYS: epoch, counter, stream, the token's rate cell, the client's misses[, the parent chat's
// counter]. ARGV: epoch, floor ('' = none), parent known ('1': PostgreSQL has it), parent number,
// now, interval and tolerance (GCRA, as `limits`), misses allowed, then the item's fields.
// Answers {code or number, the cell's TAT (or, for -6, ms until the client may guess again)}.
// The client's misses and the rate are checked first; the rate is counted only when a number is
// given.
const ACCEPT: &str = r#"
if tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(ARGV[8]) then
  return {-6, tostring(redis.call('PTTL', KEYS[5]))}
end
local now = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[4]) or ARGV[5])
if tat < now then tat = now end
if now < tat - tonumber(ARGV[7]) then return {-5, tostring(tat)} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, '0'} end
if KEYS[6] and ARGV[3] ~= '1' then
  local top = redis.call('GET', KEYS[6])
  if not top then return {-3, '0'} end
  if tonumber(top) < tonumber(ARGV[4]) then return {-4, '0'} end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[2] == '' then return {-2, '0'} end
  redis.call('SET', KEYS[2], ARGV[2], 'NX')
end
local n = redis.call('INCR', KEYS[2])
local fields = {'number', tostring(n)}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], '*', unpack(fields))
local interval = tonumber(ARGV[6])
local next = tat + interval
redis.call('SET', KEYS[4], tostring(next), 'PX', math.ceil(next - now + interval))
return {n, tostring(next)}
"#;

/// How long Redis may leave an epoch's calls unanswered before the epoch ends (a deadline missed
/// under load is not lost state; an outage is).
const UNANSWERED_GRACE: Duration = Duration::from_secs(2);

pub fn chat_counter(epoch: &str, app: i64) -> String {
    format!("chat:{epoch}:app:{app}")
}

pub fn message_counter(epoch: &str, app: i64, chat: i32) -> String {
    format!("chat:{epoch}:chat:{app}:{chat}")
}

impl ChatIntake {
    pub fn new(cache: Cache, pool: PgPool) -> ChatIntake {
        let node = format!("{}-{}", std::process::id(), crate::chat::domain::Token::generate().as_str());
        ChatIntake {
            cache,
            pool,
            node,
            phase: Mutex::new(Phase::Recovering { ended: String::new(), drained: false }),
            outbox: Mutex::new(Vec::new()),
            synchronous: RwLock::new(()),
            group_ready: std::sync::atomic::AtomicBool::new(false),
            last_claim: Mutex::new(Instant::now()),
            unanswered_since: Mutex::new(None),
            claim_idle: Mutex::new(Duration::from_secs(5)),
            changed: crate::jobs::Wake::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn route(&self) -> Route {
        match self.phase() {
            Phase::Accepting(epoch) => Route::Redis(epoch),
            Phase::Synchronous { .. } => Route::Postgres,
            Phase::Recovering { .. } => Route::Wait,
        }
    }

    /// Runs a PostgreSQL-numbered create while this server is in that mode (`None`: it no
    /// longer is).
    pub fn synchronously<T>(&self, create: impl FnOnce() -> T) -> Option<T> {
        let _shared = self.synchronous.read().unwrap_or_else(|p| p.into_inner());
        matches!(self.phase(), Phase::Synchronous { .. }).then(create)
    }

    /// Redis did not answer a call of this epoch's: the epoch ends once that has lasted past the
    /// grace. Until then the call is refused (503) and the next may get through.
    fn unanswered(&self, epoch: &str) {
        let since = *self.unanswered_since.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Instant::now);
        if since.elapsed() >= UNANSWERED_GRACE {
            self.end(epoch);
        }
    }

    fn answered(&self) {
        *self.unanswered_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The epoch is over for this server: stop accepting through Redis.
    fn end(&self, epoch: &str) {
        *self.unanswered_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if *phase == Phase::Accepting(epoch.to_string()) {
            log::warn!("chat intake: epoch {epoch} ended; writing accepted items to PostgreSQL before numbering again");
            *phase = Phase::Recovering { ended: epoch.to_string(), drained: false };
        }
    }

    /// Accepts an item into Redis in `epoch`, remembering it until it is in PostgreSQL. A
    /// message's chat must exist: issued in this epoch, or (`chat_known`) found in PostgreSQL.
    /// Counts the request in the token's rate cell in the same call; on success returns the
    /// number and the cell's new theoretical arrival time.
    pub async fn accept(&self, epoch: &str, item: Item, floor: Option<i32>, chat_known: bool, rate: &RateCell) -> Result<(i32, f64), Refused> {
        let (counter, parent, fields): (String, Option<(String, i32)>, Vec<String>) = match &item {
            Item::Chat { app, .. } => (chat_counter(epoch, *app), None, vec!["kind".into(), "chat".into(), "app".into(), app.to_string()]),
            Item::Message { app, chat, body, .. } => (
                message_counter(epoch, *app, *chat),
                Some((chat_counter(epoch, *app), *chat)),
                vec!["kind".into(), "message".into(), "app".into(), app.to_string(), "chat".into(), chat.to_string(), "body".into(), body.clone()],
            ),
        };
        let known = if chat_known || parent.is_none() { "1" } else { "" };
        let parent_number = parent.as_ref().map_or(0, |(_, n)| *n);
        let mut args = vec![
            epoch.to_string(),
            floor.map(|f| f.to_string()).unwrap_or_default(),
            known.to_string(),
            parent_number.to_string(),
            rate.now_ms.to_string(),
            format!("{:.3}", rate.interval_ms),
            format!("{:.3}", rate.tolerance_ms),
            rate.misses_allowed.to_string(),
        ];
        args.extend(fields);
        let mut keys: Vec<&str> = vec![EPOCH_KEY, &counter, STREAM, &rate.key, &rate.misses_key];
        if let Some((parent_counter, _)) = &parent {
            keys.push(parent_counter);
        }
        let answer = self.cache.eval::<(i64, String)>(ACCEPT, &keys, &args).await.map(|(code, tat)| (code, tat.parse::<f64>().unwrap_or(0.0)));
        match answer {
            Ok((-2, _)) => Err(Refused::NeedFloor),
            Ok((-3, _)) => Err(Refused::AskPostgres),
            Ok((-4, _)) => Err(Refused::NoSuchChat),
            Ok((-5, tat)) => Err(Refused::Limited(tat)),
            Ok((-6, wait_ms)) => Err(Refused::Guessing(wait_ms as i64)),
            Ok((n, tat)) if n > 0 => {
                let number = i32::try_from(n).unwrap_or(i32::MAX);
                let held = match item {
                    Item::Chat { app, .. } => Item::Chat { app, number },
                    Item::Message { app, chat, body, .. } => Item::Message { app, chat, number, body },
                };
                self.outbox.lock().unwrap_or_else(|p| p.into_inner()).push((held, Instant::now()));
                self.answered();
                Ok((number, tat))
            }
            // Redis answered: the epoch is not its own any more.
            Ok(_) => {
                self.end(epoch);
                Err(Refused::EpochEnded)
            }
            Err(e) => {
                self.unanswered(epoch);
                Err(if matches!(e, CacheError::Late(_)) { Refused::Unanswered } else { Refused::EpochEnded })
            }
        }
    }

    /// The highest message number issued for the chat in this epoch (`None`: no counter yet).
    pub async fn messages_issued(&self, epoch: &str, app: i64, chat: i32) -> Result<Option<i32>, Refused> {
        match self.cache.get(&message_counter(epoch, app, chat)).await {
            Ok(value) => Ok(value.and_then(|v| v.parse().ok())),
            Err(_) => {
                self.unanswered(epoch);
                Err(Refused::EpochEnded)
            }
        }
    }

    /// Waits until the keeper or the persister has done another round (or `timeout` passes).
    pub fn wait_for_change(&self, timeout: Duration) {
        self.changed.wait(timeout);
    }

    /// Claims a silent consumer's entries after `idle` (5 s by default).
    pub fn claim_after(&self, idle: Duration) {
        *self.claim_idle.lock().unwrap_or_else(|p| p.into_inner()) = idle;
        *self.last_claim.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() - Duration::from_secs(60);
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Starts the keeper (heartbeat, outbox, epochs) and the persister, each on its own thread
    /// with a small runtime for Redis. They stop when `stop` is set.
    pub fn start(self: &Arc<Self>, stop: Arc<std::sync::atomic::AtomicBool>) {
        for (name, work) in [("chat-keeper", 0u8), ("chat-persister", 1u8)] {
            let (intake, stop) = (self.clone(), stop.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                    // One loop inside the runtime, resting on its timer: Redis connections made
                    // here keep being driven while the thread rests.
                    runtime.block_on(async {
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            let pause = if work == 0 { intake.keep().await } else { intake.persist_some().await };
                            if !pause.is_zero() {
                                tokio::time::sleep(pause).await;
                            }
                        }
                    });
                })
                .expect("a chat thread");
        }
    }

    /// One round of the keeper; returns how long to rest.
    pub async fn keep(&self) -> Duration {
        if let Err(e) = self.keep_once().await {
            log::warn!("chat keeper: {e}");
        }
        self.changed.notify();
        Duration::from_millis(100)
    }

    async fn keep_once(&self) -> Result<(), String> {
        let mut conn = self.pool.get().map_err(|e| e.to_string())?;
        let synchronous = matches!(self.phase(), Phase::Synchronous { .. });
        repo::heartbeat(&mut conn, &self.node, synchronous).map_err(|e| e.to_string())?;
        self.sweep(&mut conn).map_err(|e| e.to_string())?;
        let redis_epoch = self.cache.get(EPOCH_KEY).await;
        match self.phase() {
            Phase::Accepting(epoch) => {
                let given_up = repo::someone_drained(&mut conn, &epoch).map_err(|e| e.to_string())?;
                match &redis_epoch {
                    _ if given_up => self.end(&epoch),
                    Ok(held) if held.as_deref() == Some(epoch.as_str()) => self.answered(),
                    // Flushed, restarted empty, or another epoch: at once.
                    Ok(_) => self.end(&epoch),
                    Err(_) => self.unanswered(&epoch),
                }
            }
            Phase::Recovering { ended, drained: false } => {
                // A server that just started holds nothing: if the open epoch is alive in Redis,
                // it simply joins it.
                let open = repo::open_epoch(&mut conn).map_err(|e| e.to_string())?;
                if self.outbox_len() == 0 && open.is_some() && redis_epoch.as_ref().ok().and_then(|v| v.clone()) == open && ended.is_empty() {
                    *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Phase::Accepting(open.unwrap_or_default());
                    return Ok(());
                }
                let ended = if ended.is_empty() { open.unwrap_or_default() } else { ended };
                self.drain(&mut conn, &ended).map_err(|e| e.to_string())?;
                *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Phase::Recovering { ended, drained: true };
            }
            Phase::Recovering { ended, drained: true } | Phase::Synchronous { ended } => {
                if redis_epoch.is_err() {
                    if repo::everyone_drained(&mut conn, &ended).map_err(|e| e.to_string())? && repo::enter_synchronous(&mut conn, &self.node, &ended).map_err(|e| e.to_string())? {
                        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Phase::Synchronous { ended };
                    }
                    return Ok(());
                }
                if synchronous {
                    // Redis is back: leave PostgreSQL numbering once no such create is running.
                    let _exclusive = self.synchronous.write().unwrap_or_else(|p| p.into_inner());
                    *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Phase::Recovering { ended: ended.clone(), drained: true };
                    repo::heartbeat(&mut conn, &self.node, false).map_err(|e| e.to_string())?;
                }
                let in_redis = redis_epoch.ok().flatten();
                let open = repo::open_epoch(&mut conn).map_err(|e| e.to_string())?;
                if let Some(open) = open.filter(|o| *o != ended) {
                    // Another server started an epoch: join it if Redis holds it, else it is over too.
                    *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = if in_redis.as_deref() == Some(open.as_str()) {
                        Phase::Accepting(open)
                    } else {
                        Phase::Recovering { ended: open, drained: false }
                    };
                    return Ok(());
                }
                let stream_empty = self.stream_len().await.map(|n| n == 0).unwrap_or(false);
                if stream_empty && repo::everyone_drained(&mut conn, &ended).map_err(|e| e.to_string())? {
                    if let Some(epoch) = repo::start_epoch(&mut conn, &ended).map_err(|e| e.to_string())? {
                        if self.cache.set_forever(EPOCH_KEY, &epoch).await.is_ok() {
                            log::info!("chat intake: epoch {epoch} started");
                            *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Phase::Accepting(epoch);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn stream_len(&self) -> Result<i64, crate::cache::CacheError> {
        self.cache.command(redis::cmd("XLEN").arg(self.cache.key(STREAM))).await
    }

    /// Forgets outbox items PostgreSQL has (the persister wrote them).
    fn sweep(&self, conn: &mut PgConnection) -> QueryResult<()> {
        let due: Vec<Item> = {
            let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            outbox.iter().filter(|(_, at)| at.elapsed() > Duration::from_millis(200)).map(|(i, _)| i.clone()).collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        let stored = repo::stored(conn, &due)?;
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).retain(|(item, _)| !stored.contains(item));
        Ok(())
    }

    /// Writes the whole outbox to PostgreSQL (idempotently) and records that this server has.
    fn drain(&self, conn: &mut PgConnection, ended: &str) -> QueryResult<()> {
        let items: Vec<Item> = self.outbox.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(i, _)| i.clone()).collect();
        if !items.is_empty() {
            repo::write_items(conn, &items)?;
            log::warn!("chat intake: wrote {} accepted items to PostgreSQL after epoch {ended:?} ended", items.len());
        }
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).retain(|(item, _)| !items.contains(item));
        repo::record_drained(conn, &self.node, ended)?;
        Ok(())
    }

    /// Reads and writes one batch from the stream (new entries, or entries a silent consumer
    /// held too long); returns how long to rest.
    pub async fn persist_some(&self) -> Duration {
        match self.persist_batch().await {
            Ok(0) => Duration::from_millis(5),
            Ok(_) => {
                self.changed.notify();
                Duration::ZERO
            }
            Err(e) => {
                log::debug!("chat persister: {e}");
                Duration::from_millis(100)
            }
        }
    }

    pub async fn persist_batch(&self) -> Result<usize, String> {
        use std::sync::atomic::Ordering;
        let stream = self.cache.key(STREAM);
        if !self.group_ready.load(Ordering::SeqCst) {
            self.cache.eval::<i64>(ENSURE_GROUP, &[STREAM], &[GROUP.to_string()]).await.map_err(|e| e.to_string())?;
            self.group_ready.store(true, Ordering::SeqCst);
        }
        let outcome = self.persist_from(&stream).await;
        if outcome.is_err() {
            self.group_ready.store(false, Ordering::SeqCst); // the stream may have gone with a flush
        }
        outcome
    }

    async fn persist_from(&self, stream: &str) -> Result<usize, String> {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(GROUP).arg(&self.node).arg("COUNT").arg(500).arg("STREAMS").arg(stream).arg(">");
        let reply: Option<StreamReadReply> = self.cache.command(&read).await.map_err(|e| e.to_string())?;
        let mut entries: Vec<StreamId> = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default();
        let idle = *self.claim_idle.lock().unwrap_or_else(|p| p.into_inner());
        let claim_due = self.last_claim.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > Duration::from_secs(1).min(idle + Duration::from_millis(1));
        if entries.is_empty() && claim_due {
            *self.last_claim.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            // A consumer that went quiet for 5 s is presumed dead: its entries are ours now.
            let mut claim = redis::cmd("XAUTOCLAIM");
            claim.arg(stream).arg(GROUP).arg(&self.node).arg(idle.as_millis() as u64).arg("0-0").arg("COUNT").arg(500);
            let claimed: redis::streams::StreamAutoClaimReply = self.cache.command(&claim).await.map_err(|e| e.to_string())?;
            entries = claimed.claimed;
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let items: Vec<Item> = entries.iter().filter_map(item_of).collect();
        let mut conn = self.pool.get().map_err(|e| e.to_string())?;
        repo::write_items(&mut conn, &items).map_err(|e| e.to_string())?;
        // Acknowledged and deleted together (one script), so the stream's length is exactly what
        // is not yet in PostgreSQL — the condition a new epoch waits for.
        let mut args = vec![GROUP.to_string()];
        args.extend(entries.iter().map(|e| e.id.clone()));
        let _: i64 = self.cache.eval(ACK_AND_DELETE, &[STREAM], &args).await.map_err(|e| e.to_string())?;
        Ok(entries.len())
    }
}

fn item_of(entry: &StreamId) -> Option<Item> {
    let text = |field: &str| entry.get::<String>(field);
    let app = text("app")?.parse().ok()?;
    let number = text("number")?.parse().ok()?;
    match text("kind")?.as_str() {
        "chat" => Some(Item::Chat { app, number }),
        "message" => Some(Item::Message { app, chat: text("chat")?.parse().ok()?, number, body: text("body")? }),
        _ => None,
    }
}

