//! The runtime every gateway call of this process runs on: one thread with an event loop, on
//! which each charge waiting for the gateway is a small task. Callers on ordinary threads (job
//! workers, request handlers on the blocking pool, tests) hand it futures and wait for the
//! answers, one or a whole batch at a time; the batch's calls are all in flight together.

use futures_util::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
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

    fn spawn<T: Send + 'static>(&self, call: impl Future<Output = T> + Send + 'static, answers: mpsc::Sender<(usize, Answer<T>)>, index: usize) {
        self.handle.spawn(async move {
            let answer = AssertUnwindSafe(call).catch_unwind().await;
            let _ = answers.send((index, answer));
        });
    }

    /// Runs one call and waits for its answer. A call that panics panics here too, on the
    /// caller's thread, as it would have without the runtime.
    pub fn run<T: Send + 'static>(&self, call: impl Future<Output = T> + Send + 'static) -> T {
        self.run_all(vec![call]).pop().expect("one answer")
    }

    /// Starts every call at once, then waits for all their answers, in the order given.
    pub fn run_all<T: Send + 'static, F: Future<Output = T> + Send + 'static>(&self, calls: Vec<F>) -> Vec<T> {
        let (answers, inbox) = mpsc::channel();
        let count = calls.len();
        for (index, call) in calls.into_iter().enumerate() {
            self.spawn(call, answers.clone(), index);
        }
        drop(answers);
        let mut slots: Vec<Option<T>> = (0..count).map(|_| None).collect();
        for _ in 0..count {
            let (index, answer) = inbox.recv().expect("every call answers");
            match answer {
                Ok(value) => slots[index] = Some(value),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        slots.into_iter().map(|s| s.expect("every slot filled")).collect()
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
