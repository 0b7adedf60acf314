//! The API's HTTP/1 server: the accept loop, one task per connection, and the limits that
//! keep clients from taking the server down — a header-read deadline (slow or half-sent
//! requests), a request-body deadline, a keep-alive idle deadline, a cap on open connections
//! that refuses the newest one (a `503`, a log line and a metric) instead of letting the
//! process run out of file descriptors, and size limits on the request line and headers
//! answered in the API's error shape.
//!
//! It replaces `axum::serve`, which has none of these. It is not a general server: HTTP/1
//! only, no upgrades, no TLS (put a proxy in front for that).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// The limits of [`serve`] (`[http]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send a request's line and headers: from accepting the connection,
    /// or from the first byte of a later request on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body, from the end of its headers.
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open connections at most; the next one is answered `503` and closed.
    pub max_connections: usize,
    /// Longest request target (path and query), in bytes (longer → `414`).
    pub max_uri_bytes: usize,
    /// Most bytes of request headers, names and values (more → `431`).
    pub max_header_bytes: usize,
}

/// hyper's own parse limits, set well above [`Limits`] so that the checks here — which answer
/// in the error shape — decide; only requests beyond these get hyper's bodiless answer.
const HYPER_MAX_HEADERS: usize = 256;
const HYPER_MAX_BUF: usize = 512 * 1024;
/// Most headers a request may have (more → `431`).
const MAX_HEADERS: usize = 100;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its request in flight and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut refused = Refusals::default();
    let mut accept_errors = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (or another transient failure): wait a little
                    // instead of spinning, and say so once a second at most.
                    metrics::counter!("herald_http_accept_errors_total").increment(1);
                    if let Some(n) = accept_errors.note() {
                        tracing::error!(error = %e, failures = n, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("herald_http_connections_refused_total").increment(1);
            if let Some(n) = refused.note() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused = n,
                    "connection limit reached (http.max_connections): refusing new connections"
                );
            }
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        metrics::gauge!("herald_http_connections").increment(1.0);
        tokio::spawn(async move {
            connection(stream, peer, app, &limits, stop).await;
            metrics::gauge!("herald_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// Counts events and allows a log line at most once a second.
#[derive(Default)]
struct Refusals {
    since_log: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    /// Counts one; the count since the last line when a line is due now.
    fn note(&mut self) -> Option<u64> {
        self.since_log += 1;
        let due = self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !due {
            return None;
        }
        self.last_log = Some(Instant::now());
        Some(std::mem::take(&mut self.since_log))
    }
}

/// Answers a connection over the limit with a `503` in the error shape, without waiting for
/// it to be writable (a full socket buffer just closes it), and closes it.
fn refuse(stream: TcpStream) {
    let body = r#"{"status":503,"message":"too many open connections; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // A direct write: tokio's `try_write` refuses until the reactor has seen the socket
    // writable, which a socket accepted this instant has not.
    if let Ok(mut raw) = stream.into_std() {
        let _ = std::io::Write::write(&mut raw, answer.as_bytes());
    }
}

/// Where a connection is in its request cycle; it decides the connection's deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request yet (accepted at) — the header deadline runs.
    Fresh(Instant),
    /// Between requests (the last ended at) — the idle deadline runs until a byte arrives.
    Idle(Instant),
    /// Part of a request line or headers arrived (the first byte at).
    Head(Instant),
    /// A request is being handled (its body has its own deadline).
    Busy(usize),
}

struct Watch {
    phase: Mutex<Phase>,
}

impl Watch {
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self.phase.lock() {
            Phase::Fresh(t) | Phase::Head(t) => Some(t + limits.header_read_timeout),
            Phase::Idle(t) => Some(t + limits.idle_timeout),
            Phase::Busy(_) => None,
        }
    }

    fn bytes_read(&self) {
        let mut p = self.phase.lock();
        if let Phase::Idle(_) = *p {
            *p = Phase::Head(Instant::now());
        }
    }

    fn request_started(&self) {
        let mut p = self.phase.lock();
        *p = match *p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
    }

    fn request_ended(&self) {
        let mut p = self.phase.lock();
        *p = match *p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }
}

/// One connection: hyper serves it while its deadline is watched; a connection past its
/// deadline is closed (it has no request in flight by then), and at shutdown each one
/// finishes the request it is handling and closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    let watch = Arc::new(Watch {
        phase: Mutex::new(Phase::Fresh(Instant::now())),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        watch: watch.clone(),
    });
    let svc_watch = watch.clone();
    let svc_limits = limits.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let watch = svc_watch.clone();
        let limits = svc_limits.clone();
        async move {
            watch.request_started();
            let answer = handle(app, &limits, req).await;
            watch.request_ended();
            Ok::<_, Infallible>(answer)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = watch.deadline(limits);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = expired => {
                // Re-read: a request may have started since the deadline was taken.
                if watch.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    metrics::counter!("herald_http_connections_timed_out_total").increment(1);
                    tracing::debug!(%peer, "closing a connection past its header or idle deadline");
                    return;
                }
            }
            changed = stop.changed(), if !stopping => {
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Checks the limits hyper does not answer in the error shape, gives the body its deadline
/// and calls the router.
async fn handle(app: Router, limits: &Limits, req: Request<Incoming>) -> Response<Body> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return error(
            StatusCode::URI_TOO_LONG,
            &format!(
                "request target is longer than the limit of {} bytes",
                limits.max_uri_bytes
            ),
        );
    }
    let headers = req.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > limits.max_header_bytes {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!(
                "request headers are larger than the limit of {MAX_HEADERS} headers and {} bytes",
                limits.max_header_bytes
            ),
        );
    }
    let req = req.map(|body| {
        Body::new(Deadline {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(limits.body_read_timeout)),
            limit: limits.body_read_timeout,
        })
    });
    let answer = match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    shaped(answer).await
}

/// A client error the router produced without a body of its own (axum's `405`, a rejection
/// answered as plain text) gets the API's error shape; headers such as `Allow` stay.
/// Answers with a body of another kind (the portal's HTML pages, JSON errors) pass unchanged.
async fn shaped(answer: Response<Body>) -> Response<Body> {
    let status = answer.status();
    if !status.is_client_error() {
        return answer;
    }
    let plain = match answer.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.as_bytes().starts_with(b"text/plain"),
    };
    if !plain {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    // The router's own texts are short; a longer one is cut.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("client error")
            .to_lowercase()
    } else {
        text
    };
    let body = serde_json::json!({"status": status.as_u16(), "message": message}).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// An answer in the API's error shape (`{"status", "message"}`), closing the connection.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"status": status.as_u16(), "message": message}).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// A request body that fails once its deadline passes before its end.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

/// The error a body past its deadline reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (http.body_read_timeout_ms)")]
pub struct BodyTimeout(Duration);

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes of a new request arrive (the idle deadline ends, the header
/// deadline starts).
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's soft limit of open files to its hard limit (each connection and
/// each destination connection is a file descriptor; distributions default the soft limit to
/// 1024). Returns the soft limit in force afterwards, when known.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, "cannot raise the open-files limit (RLIMIT_NOFILE)");
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}
