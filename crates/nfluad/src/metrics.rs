//! `--metrics ADDR`: the statistics as Prometheus text over HTTP/1.1.
//!
//! Served by hyper on a single-threaded tokio runtime in a thread of its own:
//! every connection is a task of that runtime, so a client that is slow to
//! send its request (or sends nothing at all) holds its own task and nothing
//! else — the scrapes of other clients go on beside it. Each connection must
//! deliver its request headers within [`HEADER_TIMEOUT`] and is closed after
//! [`CONNECTION_LIFETIME`] whatever it does, and at most [`MAX_CONNECTIONS`]
//! are held at once (the one over is closed as soon as accepted), so idle
//! clients cannot pile up either. The snapshot itself is taken on the
//! runtime's blocking pool: the engine's locks never stall the accept loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nflua_engine::Engine;
use tokio::sync::Semaphore;

use crate::journal::RestoreFailures;
use crate::queue::hooks::HookRegistry;
use crate::stats::{RequestCounters, Snapshot};

/// A client must have sent its whole request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection, however busy, is closed after this long; scrapers reconnect.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Connections served at once; Prometheus needs one per scraper.
const MAX_CONNECTIONS: usize = 64;

/// What a scrape reads.
struct Source {
    engine: Arc<Engine>,
    hooks: HookRegistry,
    requests: Arc<RequestCounters>,
    failures: RestoreFailures,
}

/// Binds `addr` and serves scrapes until the process ends. Returns the bound
/// address (useful with port 0).
pub fn spawn(
    addr: &str,
    engine: Arc<Engine>,
    hooks: HookRegistry,
    requests: Arc<RequestCounters>,
    failures: RestoreFailures,
) -> std::io::Result<SocketAddr> {
    // Bound here, not in the thread: a taken address is an error of the start.
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .thread_name("metrics-snapshot")
        .build()?;
    let source = Arc::new(Source { engine, hooks, requests, failures });
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept_loop(listener, source)))?;
    Ok(bound)
}

async fn accept_loop(listener: std::net::TcpListener, source: Arc<Source>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable; metrics are not served");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: do not spin on it.
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| respond(req, Arc::clone(&source)));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed after its lifetime"),
            }
        });
    }
}

async fn respond(req: Request<Incoming>, source: Arc<Source>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET || !matches!(req.uri().path(), "/metrics" | "/") {
        return Ok(text(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".to_owned()));
    }
    let body = tokio::task::spawn_blocking(move || {
        Snapshot::take(&source.engine, &source.hooks, &source.requests)
            .with_failures(Some(&source.failures))
            .to_prometheus()
    })
    .await;
    Ok(match body {
        Ok(body) => text(StatusCode::OK, "text/plain; version=0.0.4", body),
        Err(e) => {
            tracing::warn!(error = %e, "metrics snapshot failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "snapshot failed\n".to_owned())
        }
    })
}

fn text(status: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}
