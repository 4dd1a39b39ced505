//! `--metrics ADDR`: the statistics as Prometheus text over plain HTTP, on
//! a thread of its own (a scrape never waits for the control loop).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use nflua_engine::Engine;

use crate::queue::hooks::HookRegistry;
use crate::stats::{RequestCounters, Snapshot};

/// Binds `addr` and serves scrapes until the process ends. Returns the bound
/// address (useful with port 0).
pub fn spawn(
    addr: &str,
    engine: Arc<Engine>,
    hooks: HookRegistry,
    requests: Arc<RequestCounters>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(conn) => {
                    if let Err(e) = serve(conn, &engine, &hooks, &requests) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
            }
        }
    })?;
    Ok(bound)
}

fn serve(
    conn: TcpStream,
    engine: &Engine,
    hooks: &HookRegistry,
    requests: &RequestCounters,
) -> std::io::Result<()> {
    // Bounded: a client that sends nothing cannot hold the thread.
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn.try_clone()?).take(8192);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        ("200 OK", "text/plain; version=0.0.4", Snapshot::take(engine, hooks, requests).to_prometheus())
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body.as_bytes())
}
