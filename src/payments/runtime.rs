//! The runtime every gateway call of this process runs on: one thread with an event loop, on
//! which each charge waiting for the gateway is a small task. Callers on ordinary threads (job
//! workers, request handlers on the blocking pool, tests) hand it futures and wait for the
//! answers, one or a whole batch at a time; the batch's calls are all in flight together. A
//! worker that keeps several batches in flight starts them and is told as each answer arrives.

use futures_util::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

pub struct GatewayRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

type Answer<T> = Result<T, Box<dyn Any + Send>>;

impl GatewayRuntime {
    pub fn start() -> GatewayRuntime {
        let (handle_tx, handle_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gateway".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a gateway runtime");
                handle_tx.send(runtime.handle().clone()).expect("the starter waits for the handle");
                // Drives every spawned call until the owner goes away.
                let _ = runtime.block_on(stopped);
            })
            .expect("spawn the gateway thread");
        let handle = handle_rx.recv().expect("the gateway runtime starts");
        GatewayRuntime { handle, stop: Some(stop), thread: Some(thread) }
    }

    /// Runs one call and waits for its answer. A call that panics panics here too, on the
    /// caller's thread, as it would have without the runtime.
    pub fn run<T: Send + 'static>(&self, call: impl Future<Output = T> + Send + 'static) -> T {
        self.run_all(vec![call]).pop().expect("one answer")
    }

    /// Starts every call at once, then waits for all their answers, in the order given.
    pub fn run_all<T: Send + 'static, F: Future<Output = T> + Send + 'static>(&self, calls: Vec<F>) -> Vec<T> {
        let mut answers = self.start_each(calls, Arc::new(|_| {})).wait_all();
        answers.sort_by_key(|(index, _)| *index);
        answers.into_iter().map(|(_, answer)| answer).collect()
    }

    /// Starts every call at once and returns without waiting. `arrived` runs after each answer,
    /// told whether it was the last (on the runtime's thread, so it must be quick: a
    /// notification); the answers are taken as they come with `Arrivals::take`.
    pub fn start_each<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        calls: Vec<F>,
        arrived: Arc<dyn Fn(bool) + Send + Sync>,
    ) -> Arrivals<T> {
        let (deliver, inbox) = mpsc::channel();
        let left = calls.len();
        let answered = Arc::new(AtomicUsize::new(0));
        for (index, call) in calls.into_iter().enumerate() {
            let (deliver, arrived, answered) = (deliver.clone(), arrived.clone(), answered.clone());
            self.handle.spawn(async move {
                let answer = AssertUnwindSafe(call).catch_unwind().await;
                let _ = deliver.send((index, answer));
                let last = answered.fetch_add(1, Ordering::AcqRel) + 1 == left;
                arrived(last);
            });
        }
        Arrivals { inbox, left, calls: left, answered }
    }
}

/// The answers of calls started together (`GatewayRuntime::start_each`), by the index of their
/// call, taken as they arrive. A call that panicked panics in the taker, on the caller's thread,
/// as it would have without the runtime.
pub struct Arrivals<T> {
    inbox: mpsc::Receiver<(usize, Answer<T>)>,
    /// Answers not taken yet.
    left: usize,
    calls: usize,
    answered: Arc<AtomicUsize>,
}

impl<T> Arrivals<T> {
    /// The answers that are in and not yet taken, without waiting.
    pub fn take(&mut self) -> Vec<(usize, T)> {
        let mut taken = Vec::new();
        while let Ok(arrival) = self.inbox.try_recv() {
            taken.push(self.open(arrival));
        }
        taken
    }

    /// Every answer not yet taken, waiting for those still out.
    pub fn wait_all(&mut self) -> Vec<(usize, T)> {
        let mut taken = Vec::with_capacity(self.left);
        while self.left > 0 {
            let arrival = self.inbox.recv().expect("every call answers");
            taken.push(self.open(arrival));
        }
        taken
    }

    /// How many answers have not been taken yet.
    pub fn outstanding(&self) -> usize {
        self.left
    }

    /// How many calls are still waiting for their answer.
    pub fn unanswered(&self) -> usize {
        self.calls - self.answered.load(Ordering::Acquire).min(self.calls)
    }

    fn open(&mut self, (index, answer): (usize, Answer<T>)) -> (usize, T) {
        self.left -= 1;
        match answer {
            Ok(value) => (index, value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for GatewayRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Never join from the gateway thread itself (a task dropping the last owner).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
