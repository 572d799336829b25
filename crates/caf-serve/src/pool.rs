//! A fixed set of inference threads fed by a bounded queue. The async
//! threads hand work over and await its answer; they never run the model,
//! so a slow prediction cannot stall the server's other connections.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Every inference thread is busy and the queue holds as many requests as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// `workers` threads taking jobs from a queue of `queue` places.
pub(crate) struct InferencePool {
    jobs: SyncSender<Job>,
}

impl InferencePool {
    /// With `queue` 0, work is taken only when a thread is free to run it at once.
    pub(crate) fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, waiting) = sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for index in 0..workers.max(1) {
            let waiting = waiting.clone();
            std::thread::Builder::new()
                .name(format!("caf-serve-inference-{index}"))
                .spawn(move || loop {
                    let next = waiting.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match next {
                        // Run on one of rayon's threads, as `predict` runs each
                        // photo: the kernels' parallel loops inside it then
                        // share rayon's threads with the other jobs' instead
                        // of each competing for all of them from outside.
                        Ok(job) => rayon::scope(|_| job()),
                        // The pool is gone: the server has shut down.
                        Err(_) => break,
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queues `work`; its answer arrives on the receiver. A panic in `work`
    /// drops the sender (the receiver sees the channel closed) and leaves the
    /// thread serving.
    pub(crate) fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, QueueFull> {
        let (answer, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(value) = catch_unwind(AssertUnwindSafe(work)) {
                // The requester may have given up (its time limit); nothing to do then.
                let _ = answer.send(value);
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(QueueFull),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn work_beyond_the_threads_and_the_queue_is_refused() {
        let pool = InferencePool::new(1, 1).expect("threads");
        let (release, hold) = channel::<()>();
        let (started, running) = channel::<()>();
        // One job runs (held until released), one waits in the queue, the third is refused.
        let first = pool
            .submit(move || {
                started.send(()).expect("started");
                hold.recv().expect("released");
                1
            })
            .expect("a free thread");
        running
            .recv_timeout(Duration::from_secs(10))
            .expect("the first job runs");
        let second = pool.submit(|| 2).expect("a place in the queue");
        assert_eq!(pool.submit(|| 3).err(), Some(QueueFull));
        release.send(()).expect("release");
        assert_eq!((first.await, second.await), (Ok(1), Ok(2)));
        // Room again.
        assert_eq!(pool.submit(|| 4).expect("room").await, Ok(4));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = InferencePool::new(1, 2).expect("threads");
        let failed = pool.submit(|| -> u32 { panic!("a bad request") }).expect("queued");
        assert!(failed.await.is_err(), "the answer channel closes");
        assert_eq!(
            pool.submit(|| 5).expect("queued").await,
            Ok(5),
            "the thread still serves"
        );
    }
}
