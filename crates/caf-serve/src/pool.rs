//! Admission of inference work: at most `workers` requests predicted at
//! once, `queue` more waiting in arrival order, the rest refused. The async
//! threads hand work over and await its answer; they never run the model,
//! so a slow prediction cannot stall the server's other connections.
//!
//! Admitted work runs as tasks on rayon's threads, as `predict` runs each
//! photo: a request's kernels split their loops across those threads, and
//! while one request is in a part that does not split (decoding, the
//! detector's small stages), the threads take up another request's.
//! Dedicated threads that each waited on one request at a time left
//! rayon's threads idle in those parts.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Every place to run is taken and the queue holds as many requests as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// Requests running and waiting.
struct Admitted {
    running: usize,
    waiting: VecDeque<Job>,
}

/// At most `workers` jobs on rayon's threads at once, `queue` more waiting.
pub(crate) struct InferencePool {
    workers: usize,
    queue: usize,
    admitted: Arc<Mutex<Admitted>>,
}

impl InferencePool {
    /// With `queue` 0, work is taken only when it can start at once.
    pub(crate) fn new(workers: usize, queue: usize) -> Self {
        Self {
            workers: workers.max(1),
            queue,
            admitted: Arc::new(Mutex::new(Admitted {
                running: 0,
                waiting: VecDeque::new(),
            })),
        }
    }

    /// Queues `work`; its answer arrives on the receiver. A panic in `work`
    /// drops the sender (the receiver sees the channel closed) and leaves the
    /// pool serving.
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
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if admitted.running < self.workers {
            admitted.running += 1;
            drop(admitted);
            let shared = self.admitted.clone();
            rayon::spawn(move || run_until_none_wait(job, &shared));
            Ok(receiver)
        } else if admitted.waiting.len() < self.queue {
            admitted.waiting.push_back(job);
            Ok(receiver)
        } else {
            Err(QueueFull)
        }
    }
}

/// Runs `job`, then each waiting job in turn, and gives the place up when
/// none waits.
fn run_until_none_wait(job: Job, admitted: &Mutex<Admitted>) {
    let mut next = Some(job);
    while let Some(job) = next {
        // A panic was caught inside the job.
        job();
        let mut admitted = admitted.lock().unwrap_or_else(PoisonError::into_inner);
        next = admitted.waiting.pop_front();
        if next.is_none() {
            admitted.running -= 1;
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
        let pool = InferencePool::new(1, 1);
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
    async fn waiting_work_starts_only_when_a_place_frees_and_in_arrival_order() {
        let pool = InferencePool::new(1, 2);
        let (release, hold) = channel::<()>();
        let (started, running) = channel::<()>();
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = pool
            .submit(move || {
                started.send(()).expect("started");
                hold.recv().expect("released");
            })
            .expect("a free place");
        running
            .recv_timeout(Duration::from_secs(10))
            .expect("the first job runs");
        let queued: Vec<_> = (2..=3)
            .map(|n| {
                let order = order.clone();
                pool.submit(move || order.lock().expect("order").push(n))
                    .expect("a place in the queue")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            order.lock().expect("order").is_empty(),
            "nothing else runs while the one place is taken"
        );
        release.send(()).expect("release");
        first.await.expect("first");
        for answer in queued {
            answer.await.expect("queued");
        }
        assert_eq!(*order.lock().expect("order"), [2, 3]);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = InferencePool::new(1, 2);
        let failed = pool.submit(|| -> u32 { panic!("a bad request") }).expect("queued");
        assert!(failed.await.is_err(), "the answer channel closes");
        assert_eq!(
            pool.submit(|| 5).expect("queued").await,
            Ok(5),
            "the thread still serves"
        );
    }
}
