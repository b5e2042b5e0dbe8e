//! Password hashing with Argon2id (the RustCrypto `argon2` crate, OWASP's first choice): slow on
//! purpose, salted per password, its parameters stored inside the PHC string it produces.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any password")
        .to_string()
}

pub fn verify(stored_hash: &str, password: &str) -> bool {
    PasswordHash::new(stored_hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// Spends the same time as a real check, so that a wrong email answers no faster than a wrong
/// password and reveals nothing about who has an account.
pub fn verify_against_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("agora-timing-equaliser"));
    let _ = verify(dummy, password);
}

/// Checks `password` against `stored` (or against nothing, at the same cost, when there is no
/// such account).
pub fn check(stored: Option<&str>, password: &str) -> bool {
    match stored {
        Some(hash) => verify(hash, password),
        None => {
            verify_against_nothing(password);
            false
        }
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// A few threads that do nothing but slow hashing, behind a bounded queue. A flood of sign-ins
/// waits here — holding no database connection and no web worker — instead of taking the
/// blocking pool and the CPU from every other page; past the queue's bound it is told to come
/// back later.
pub struct HashPool {
    tasks: SyncSender<Task>,
    threads: usize,
    queued: Arc<AtomicUsize>,
    /// Tasks run so far (what the throttle's tests count: passwords that reached the hash).
    ran: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are waiting")]
pub struct HashPoolBusy;

impl HashPool {
    pub fn new(threads: usize, queue: usize) -> HashPool {
        let (tasks, inbox) = sync_channel::<Task>(queue);
        let inbox = Arc::new(Mutex::new(inbox));
        for n in 0..threads.max(1) {
            let inbox = inbox.clone();
            std::thread::Builder::new()
                .name(format!("hasher-{n}"))
                .spawn(move || work(inbox))
                .expect("spawn a hashing thread");
        }
        HashPool { tasks, threads: threads.max(1), queued: Arc::new(AtomicUsize::new(0)), ran: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Tasks waiting for a thread.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Queues `task` without waiting for it.
    pub fn submit(&self, task: impl FnOnce() + Send + 'static) -> Result<(), HashPoolBusy> {
        let (queued, ran) = (self.queued.clone(), self.ran.clone());
        queued.fetch_add(1, Ordering::SeqCst);
        let wrapped: Task = Box::new(move || {
            queued.fetch_sub(1, Ordering::SeqCst);
            ran.fetch_add(1, Ordering::SeqCst);
            task();
        });
        match self.tasks.try_send(wrapped) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Err(HashPoolBusy)
            }
        }
    }

    /// How many tasks have run.
    pub fn ran(&self) -> usize {
        self.ran.load(Ordering::SeqCst)
    }

    /// Runs `work` on a hashing thread and waits for its answer without blocking the caller's thread.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashPoolBusy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(move || {
            let _ = answer.send(work());
        })?;
        answered.await.map_err(|_| HashPoolBusy)
    }
}

fn work(inbox: Arc<Mutex<Receiver<Task>>>) {
    loop {
        let next = inbox.lock().unwrap().recv();
        match next {
            Ok(task) => task(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_accepts_its_password_and_nothing_else() {
        let stored = hash("correct horse");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify(&stored, "correct horse"));
        assert!(!verify(&stored, "correct horse "));
        assert!(!verify("not a hash", "correct horse"));
        assert_ne!(hash("same"), hash("same"), "every hash has its own salt");
        assert!(check(Some(&stored), "correct horse") && !check(None, "correct horse"));
    }

    #[test]
    fn a_full_hashing_queue_refuses_instead_of_growing() {
        let pool = HashPool::new(1, 1);
        let (started, wait) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        pool.submit(move || {
            started.send(()).unwrap();
            let _ = gate.recv();
        })
        .unwrap();
        wait.recv().unwrap(); // the one thread is busy
        pool.submit(|| {}).unwrap(); // the one place in the queue
        assert_eq!(pool.queued(), 1);
        assert!(pool.submit(|| {}).is_err(), "the queue is full");
        release.send(()).unwrap();
    }
}
