//! Group commit: requests that arrive together are written together.
//!
//! Each request decides everything about its rows and hands them over; a few writer threads each
//! take whatever is waiting (up to a batch) and write the whole batch in one transaction, one
//! statement where they can, and one commit. A request is answered only after the commit that
//! holds its rows — nothing is acknowledged that a crash could lose — but a hundred requests share
//! one parse, one plan and one WAL flush instead of paying for one each. Under light load a batch
//! is a single request and nothing waits.
//!
//! The writers are threads of their own (diesel is blocking); a request waits on a oneshot
//! channel, so the server's async threads never block.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

struct Waiting<T, R> {
    item: T,
    reply: tokio::sync::oneshot::Sender<R>,
}

pub struct GroupCommit<T, R> {
    sender: SyncSender<Waiting<T, R>>,
}

/// How a group commit runs: its threads' name, how many, the largest batch, and how many requests
/// may wait before `submit` refuses.
pub struct Shape {
    pub name: &'static str,
    pub threads: usize,
    pub max_batch: usize,
    pub backlog: usize,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the writers. `write` gets a batch and returns one answer per item, in order.
    pub fn start(shape: Shape, write: impl Fn(&[T]) -> Vec<R> + Send + Sync + 'static) -> GroupCommit<T, R> {
        let (sender, receiver) = sync_channel::<Waiting<T, R>>(shape.backlog);
        let receiver = Arc::new(Mutex::new(receiver));
        let write = Arc::new(write);
        for n in 0..shape.threads {
            let (receiver, write, max_batch) = (receiver.clone(), write.clone(), shape.max_batch);
            std::thread::Builder::new()
                .name(format!("{}-{n}", shape.name))
                .spawn(move || run(&receiver, max_batch, &*write))
                .expect("a group-commit thread");
        }
        GroupCommit { sender }
    }

    /// Hands the item over and waits (without blocking the server's thread) for its commit.
    /// `None`: the backlog is full (or the writers stopped); nothing was written.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.sender.try_send(Waiting { item, reply }) {
            Ok(()) => answer.await.ok(),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => None,
        }
    }
}

fn run<T, R>(receiver: &Mutex<Receiver<Waiting<T, R>>>, max_batch: usize, write: &dyn Fn(&[T]) -> Vec<R>) {
    loop {
        // One writer gathers at a time; while it writes, the next gathers what arrived meanwhile.
        let batch = {
            let receiver = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Ok(first) = receiver.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().map(|w| (w.item, w.reply)).unzip();
        let answers = write(&items);
        debug_assert_eq!(answers.len(), replies.len());
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer); // the request may have gone; its rows stand
        }
    }
}
