//! The runtime every gateway call of this process runs on: one thread with an event loop, on
//! which each charge waiting for the gateway is a small task. Callers on ordinary threads (job
//! workers, request handlers on the blocking pool, tests) hand it futures and wait for the
//! answers, one or a whole batch at a time; the batch's calls are all in flight together. A
//! worker that keeps several batches in flight starts them and is told when each is answered.

use futures_util::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
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
        self.start_all(calls, || {}).wait()
    }

    /// Starts every call at once and returns without waiting. `ready` runs when the last answer
    /// is in (on the runtime's thread, so it must be quick: a notification); `Answers::wait` then
    /// takes them all without blocking.
    pub fn start_all<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        calls: Vec<F>,
        ready: impl FnOnce() + Send + 'static,
    ) -> Answers<T> {
        let (deliver, inbox) = mpsc::channel();
        let count = calls.len();
        let answered = Arc::new(AtomicUsize::new(0));
        let ready: Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>> = Arc::new(Mutex::new(Some(Box::new(ready))));
        if count == 0 {
            if let Some(ready) = ready.lock().unwrap().take() {
                ready();
            }
        }
        for (index, call) in calls.into_iter().enumerate() {
            let (deliver, answered, ready) = (deliver.clone(), answered.clone(), ready.clone());
            self.handle.spawn(async move {
                let answer = AssertUnwindSafe(call).catch_unwind().await;
                let _ = deliver.send((index, answer));
                if answered.fetch_add(1, Ordering::AcqRel) + 1 == count {
                    if let Some(ready) = ready.lock().unwrap().take() {
                        ready();
                    }
                }
            });
        }
        Answers { inbox, count, answered }
    }
}

/// The answers of calls started together (`GatewayRuntime::start_all`).
pub struct Answers<T> {
    inbox: mpsc::Receiver<(usize, Answer<T>)>,
    count: usize,
    answered: Arc<AtomicUsize>,
}

impl<T> Answers<T> {
    /// Every answer, in the order the calls were given, waiting for those still out. A call that
    /// panicked panics here, on the caller's thread, as it would have without the runtime.
    pub fn wait(self) -> Vec<T> {
        let mut slots: Vec<Option<T>> = (0..self.count).map(|_| None).collect();
        for _ in 0..self.count {
            match self.inbox.recv().expect("every call answers") {
                (index, Ok(value)) => slots[index] = Some(value),
                (_, Err(panic)) => std::panic::resume_unwind(panic),
            }
        }
        slots.into_iter().map(|slot| slot.expect("every slot filled")).collect()
    }

    /// How many calls are still waiting for their answer.
    pub fn unanswered(&self) -> usize {
        self.count - self.answered.load(Ordering::Acquire).min(self.count)
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
