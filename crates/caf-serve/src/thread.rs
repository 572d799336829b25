//! The service on a thread of its own, for a program that is not async
//! itself (a benchmark, a test, an application that embeds the service).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::service::Service;

/// A server running on its own thread and async runtime until
/// [`ServerThread::shut_down`] (or drop), which lets requests in flight finish.
pub struct ServerThread {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl ServerThread {
    /// Serves `service` on `listener` (bound by the caller, e.g. to
    /// `127.0.0.1:0` for a free port), with a runtime of two async threads.
    pub fn start(listener: std::net::TcpListener, service: Arc<Service>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("caf-serve".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                crate::serve(listener, service, async move {
                    // A dropped sender asks for the shutdown too.
                    let _ = stopped.await;
                })
                .await
            })
        })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks for a graceful shutdown and waits for the server to return; the
    /// server's own error, if it stopped with one. Later calls return `Ok`.
    pub fn shut_down(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked"))),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
