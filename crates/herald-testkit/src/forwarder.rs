//! A TCP forwarder in front of a server, owned by one test: it simulates an outage or a hung
//! server without touching the server behind it (whose state survives), and counts the
//! connections clients open through it (to prove a client reuses its connection, or never
//! retries by itself).
//!
//! Modes: [`Mode::Forward`] passes bytes both ways; [`Mode::Refuse`] stops listening
//! (clients see "connection refused"); [`Mode::Drop`] accepts and closes at once; [`Mode::Hang`]
//! accepts and never answers. Leaving `Forward` cuts every open forwarded connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// What the forwarder does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the target.
    Forward = 0,
    /// Not listening: connections are refused.
    Refuse = 1,
    /// Accept, then close at once.
    Drop = 2,
    /// Accept, then neither read nor answer (a hung server).
    Hang = 3,
}

struct Shared {
    mode: AtomicU8,
    accepted: AtomicUsize,
    conns: Mutex<Vec<AbortHandle>>,
    acceptor: Mutex<Option<AbortHandle>>,
}

/// A forwarder on 127.0.0.1; stops (and cuts everything) when dropped.
pub struct Forwarder {
    /// The port clients connect to.
    pub port: u16,
    /// `127.0.0.1:port`.
    pub addr: SocketAddr,
    target: String,
    shared: Arc<Shared>,
}

fn listen(at: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(at)?;
    socket.listen(1024)
}

impl Forwarder {
    /// A forwarder on a free port to `target` (`host:port`), forwarding.
    pub async fn start(target: &str) -> Forwarder {
        Self::start_on(0, target).await
    }

    /// A forwarder to `target` in `mode`.
    pub async fn start_in(target: &str, mode: Mode) -> Forwarder {
        let f = Self::start_on(0, target).await;
        f.shared.mode.store(mode as u8, Ordering::SeqCst);
        f
    }

    /// A forwarder on a given port (for brokers that advertise it before it runs).
    pub async fn start_on(port: u16, target: &str) -> Forwarder {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], port)), target).await
    }

    /// A forwarder on another loopback address (e.g. `127.0.0.2:0`), for tests whose target
    /// policy allows one loopback address and not another.
    pub async fn start_at(at: SocketAddr, target: &str) -> Forwarder {
        let listener = listen(at).expect("bind the forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        let f = Forwarder {
            port: addr.port(),
            addr,
            target: target.to_string(),
            shared: Arc::new(Shared {
                mode: AtomicU8::new(Mode::Forward as u8),
                accepted: AtomicUsize::new(0),
                conns: Mutex::default(),
                acceptor: Mutex::default(),
            }),
        };
        f.serve(listener);
        f
    }

    fn serve(&self, listener: TcpListener) {
        let (shared, target) = (self.shared.clone(), self.target.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                let mode = shared.mode.load(Ordering::SeqCst);
                let conn = if mode == Mode::Drop as u8 {
                    continue;
                } else if mode == Mode::Hang as u8 {
                    tokio::spawn(async move {
                        let _hold = inbound;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    })
                } else {
                    tokio::spawn(async move {
                        if let Ok(mut out) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    })
                };
                shared.conns.lock().push(conn.abort_handle());
            }
        });
        *self.shared.acceptor.lock() = Some(task.abort_handle());
    }

    fn cut(&self) {
        for c in self.shared.conns.lock().drain(..) {
            c.abort();
        }
    }

    /// Switches mode. Leaving `Forward` cuts every open connection; entering `Refuse` closes
    /// the listening socket, leaving it listens again on the same port.
    pub async fn set(&self, mode: Mode) {
        let old = self.shared.mode.swap(mode as u8, Ordering::SeqCst);
        if mode != Mode::Forward {
            self.cut();
        }
        if mode == Mode::Refuse && old != Mode::Refuse as u8 {
            if let Some(a) = self.shared.acceptor.lock().take() {
                a.abort();
            }
        } else if mode != Mode::Refuse && old == Mode::Refuse as u8 {
            // The aborted acceptor drops its socket on its next poll: retry briefly.
            let deadline = Instant::now() + Duration::from_secs(5);
            let listener = loop {
                match listen(self.addr) {
                    Ok(l) => break l,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("cannot listen again on {}: {e}", self.addr),
                }
            };
            self.serve(listener);
        }
        // Let aborted tasks drop their sockets before the test goes on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Stops listening and cuts every open connection (clients see "connection refused").
    pub async fn down(&self) {
        self.set(Mode::Refuse).await;
    }

    /// Forwards again, on the same port.
    pub async fn up(&self) {
        self.set(Mode::Forward).await;
    }

    /// Connections accepted so far, whatever the mode.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// `127.0.0.1:port`, for `server_url`-style settings.
    pub fn server_url(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:port`, for endpoint-style settings.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(a) = self.shared.acceptor.lock().take() {
            a.abort();
        }
        self.cut();
    }
}
