//! The HTTP/1.1 accept loop: every connection gets a deadline for its request headers, so a
//! client that sends them slowly (or not at all) cannot hold a connection (and a file descriptor)
//! open. Bodies have no deadline: tether reads one only after the caller's credential checked,
//! and a timer on every body (tower-http's `RequestBodyTimeoutLayer`) cost a large share of
//! `POST /v1/authorize`'s throughput (docs/performance.md).

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// How long a client may take to send a request.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// To send a request's headers; past it the connection is closed.
    pub header_read: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts { header_read: Duration::from_secs(10) }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, runs
/// `on_shutdown` (which ends long-lived streams) and waits for open requests to finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    timeouts: HttpTimeouts,
    shutdown: impl std::future::Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to close instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    on_shutdown();
    graceful.shutdown().await;
}
