//! What a pool's worker thread keeps in flight: batches of jobs that wait on another system (a
//! gateway answering in hundreds of milliseconds), begun and not yet finished.
//!
//! A worker that claims a batch, waits for every answer, settles and only then claims again keeps
//! each slot busy for the batch's slowest answer plus the whole cycle's database work. Little's
//! law then gives fewer settles a second than the slots allow. The window instead claims in
//! batches of half its room (`WorkerSettings::in_flight` a thread) and begins each at once. An
//! answered call frees its slot at once, and the next claim refills it, while the batch is settled
//! in one transaction when its last answer is in. The thread alternates: refill, then settle one
//! answered batch.
//!
//! Settling each answer as it came (a transaction for every few) was tried and measured slower:
//! on two cores the thread's database round trips, not the slots, became the bound. A thread is
//! woken when a batch's last answer is in (or at its poll), not at every answer.

use diesel::QueryResult;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Begun, Conn, Job, Ready, Waiting, Wake, Worker};

/// Batches one worker thread has begun and not finished.
#[derive(Default)]
pub struct Window {
    flights: HashMap<u64, Flight>,
    next: u64,
    /// The flights whose last answer is in, in the order they came; pushed from the thread that
    /// received it.
    answered: Arc<Mutex<VecDeque<u64>>>,
    signal: Arc<Wake>,
}

struct Flight {
    jobs: Vec<Job>,
    waiting: Box<dyn Waiting>,
}

/// What one turn of a worker thread did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turn {
    pub claimed: usize,
    pub finished: usize,
    /// The claim took all it asked for: there may be more to claim at once.
    pub claimed_all_asked: bool,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// Room for more jobs of `queue`, which may have `at_once` calls out: an answered call frees
    /// its slot before its batch's settle, but no more than twice `at_once` jobs are held in all.
    fn room(&self, queue: &str, at_once: i64) -> i64 {
        let mine = || self.flights.values().filter(|f| f.jobs[0].queue == queue);
        let calling: i64 = mine().map(|f| f.waiting.unanswered() as i64).sum();
        let held: i64 = mine().map(|f| f.jobs.len() as i64).sum();
        (at_once - calling).min(2 * at_once - held)
    }

    /// Waits until a flight's last answer is in, or `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let answered = self.answered.clone();
        self.signal.wait_unless(timeout, move || !answered.lock().unwrap().is_empty());
    }

    /// A new flight's id, and what its last answer calls. A batch is settled when its last answer
    /// is in: one transaction for the batch, where settling each answer as it came cost a
    /// transaction for every few. Its answered calls free their slots meanwhile (`room`), so the
    /// wait costs the gateway nothing.
    fn ready_for(&mut self) -> (u64, Ready) {
        self.next += 1;
        let (id, answered, signal) = (self.next, self.answered.clone(), self.signal.clone());
        (id, Box::new(move || {
            answered.lock().unwrap().push_back(id);
            signal.notify();
        }))
    }

    fn next_answered(&self) -> Option<u64> {
        self.answered.lock().unwrap().pop_front()
    }
}

/// How many jobs a thread claims at once into a window that is not empty: half its room, so
/// that two batches overlap and a claim's cost is shared by many jobs.
fn claim_size(at_once: i64) -> i64 {
    // Measured (bench/results.md's runs, 2 cores): the settling probe is about as fast with
    // claims of a half, a quarter or a whole room (1,230–1,345/s), because what frees a slot is
    // its own answer, not its batch's settle. Smaller claims cost the database more claims and
    // settles: with quarters, Pay at 300 ms fell from 1,798 to 1,173–1,322 requests/s, as the
    // workers' transactions took PostgreSQL from it; an eighth or a sixteenth also slowed the
    // probe (a claim costs a thread ~15 ms whatever its size).
    (at_once / 2).max(1)
}

impl Worker {
    /// One turn of a pool thread: claims and begins more while its window has room, then settles
    /// one batch whose answers are all in. Jobs of queues that do not wait on other systems are
    /// claimed and run as in `run_once`, in the same turn.
    pub fn turn(&self, window: &mut Window, conn: &mut Conn<'_>) -> QueryResult<Turn> {
        // Refill first: answered calls have freed their slots, and every moment a slot stays
        // empty is lost to Little's law; the answers wait a claim's length for their settle.
        let mut turn = self.refill(window, conn)?;
        turn.finished += self.settle_answered(window, conn)?;
        Ok(turn)
    }

    fn refill(&self, window: &mut Window, conn: &mut Conn<'_>) -> QueryResult<Turn> {
        let mut turn = Turn::default();
        let settings = self.settings();
        // An empty window takes its whole room at once: a gateway that answers at once (or a
        // start) gains nothing from small claims, and each claim costs the thread the same.
        let asked: Vec<(String, i64)> = settings
            .in_flight
            .iter()
            .map(|(queue, at_once)| {
                let room = window.room(queue, *at_once);
                (queue.clone(), if window.is_empty() { room } else { room.min(claim_size(*at_once)) })
            })
            .collect();
        let worth_claiming = window.is_empty() || asked.iter().zip(&settings.in_flight).any(|((_, ask), (_, at_once))| *ask >= claim_size(*at_once));
        if !worth_claiming {
            return Ok(turn);
        }
        let started = Instant::now();
        let claimed = conn.run(|conn| self.claim_into(conn, &asked))?;
        let claiming = started.elapsed();
        turn.claimed = claimed.len();
        turn.claimed_all_asked = claimed.first().is_some_and(|first| {
            let ask = asked.iter().find(|(q, _)| *q == first.queue).map_or(settings.batch, |(_, ask)| *ask);
            claimed.len() as i64 >= ask
        });
        let mut succeeded = Vec::new();
        for group in self.startable_groups(&claimed) {
            let (id, ready) = window.ready_for();
            match self.begin(conn, &group, ready)? {
                Begun::Done(results) => {
                    turn.finished += group.len();
                    self.conclude(conn, &group, results, &mut succeeded)?;
                }
                // Jobs decided before any call (a fraud rule said no) get their result with the
                // batch's answers: settling them apart would cost a transaction of its own.
                Begun::Waiting(waiting) => {
                    window.flights.insert(id, Flight { jobs: group, waiting });
                }
            }
        }
        self.complete(conn, &succeeded)?;
        if turn.claimed > 0 {
            log::debug!("claimed {} in {} ms, began in {} ms more", turn.claimed, claiming.as_millis(), (started.elapsed() - claiming).as_millis());
        }
        Ok(turn)
    }

    /// Settles the next batch whose answers are all in, so that the thread refills between
    /// settles; returns how many jobs that finished.
    fn settle_answered(&self, window: &mut Window, conn: &mut Conn<'_>) -> QueryResult<usize> {
        let Some(Flight { jobs, waiting }) = window.next_answered().and_then(|id| window.flights.remove(&id)) else { return Ok(0) };
        let started = Instant::now();
        let results = self.finish(conn, waiting, jobs.len())?;
        let settling = started.elapsed();
        let mut succeeded = Vec::new();
        if let Err(e) = self.conclude(conn, &jobs, results, &mut succeeded) {
            // The jobs were let go of: their leases run out and the rescuer puts them back.
            log::warn!("worker {}: settling {} jobs' failures failed: {e}", self.id, jobs.len());
        }
        self.complete(conn, &succeeded)?;
        log::debug!("settled {} in {} ms, completed in {} ms more", jobs.len(), settling.as_millis(), (started.elapsed() - settling).as_millis());
        Ok(jobs.len())
    }

    /// Settles every flight, waiting for the answers: what a stopping thread does last, so that
    /// nothing it began is left for a lease to expire.
    pub fn land(&self, window: &mut Window, conn: &mut Conn<'_>, poll: Duration) {
        while !window.is_empty() {
            window.wait(poll);
            if let Err(e) = self.settle_answered(window, conn) {
                log::warn!("worker {}: {e}", self.id);
            }
        }
    }
}
