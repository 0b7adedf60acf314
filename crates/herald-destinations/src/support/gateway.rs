//! A checking gateway for clients that connect to addresses a server tells them about: a
//! SOCKS5 listener on loopback, private to one driver, that resolves each requested
//! `host:port` itself, refuses any address the [`TargetPolicy`] refuses, and connects to
//! exactly the address it checked (no second lookup).
//!
//! Kafka needs it: the bootstrap brokers answer Metadata with the leaders to produce to, and
//! the client (rskafka) connects to those by itself. Routed through the gateway (rskafka's
//! SOCKS5 setting), every broker connection — bootstrap or learned — passes the policy, and
//! TLS still verifies the certificate against the broker's name (the client speaks TLS
//! through the tunnel).
//!
//! It is not a general proxy: no authentication, `CONNECT` only, and it listens on
//! `127.0.0.1` for its own driver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::address::resolve;
use crate::target::TargetPolicy;

/// A running gateway; it stops when dropped.
pub struct Gateway {
    addr: SocketAddr,
    refused: Arc<Mutex<Option<String>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    /// Starts a gateway enforcing `policy`.
    pub async fn start(policy: Arc<TargetPolicy>) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(None));
        let seen = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (policy, seen) = (policy.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Err(Refusal(why)) = tunnel(inbound, &policy).await
                        && let Some(why) = why
                    {
                        *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                    }
                });
            }
        })
        .abort_handle();
        Ok(Gateway {
            addr,
            refused,
            task,
        })
    }

    /// The `host:port` to give the client as its SOCKS5 proxy.
    pub fn proxy(&self) -> String {
        self.addr.to_string()
    }

    /// Why the last connection was refused by the policy, if one was since the last call.
    pub fn take_refusal(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Why a tunnel ended early: `Some` when the policy refused the target.
struct Refusal(Option<String>);

impl From<std::io::Error> for Refusal {
    fn from(_: std::io::Error) -> Self {
        Refusal(None)
    }
}

/// SOCKS5 reply codes.
const SUCCEEDED: u8 = 0;
const NOT_ALLOWED: u8 = 2;
const HOST_UNREACHABLE: u8 = 4;
const COMMAND_NOT_SUPPORTED: u8 = 7;

async fn reply(s: &mut TcpStream, code: u8) -> std::io::Result<()> {
    s.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

/// One client connection: the SOCKS5 handshake (RFC 1928, no authentication), the policy
/// check, then bytes copied both ways until either side closes.
async fn tunnel(mut inbound: TcpStream, policy: &TargetPolicy) -> Result<(), Refusal> {
    let mut head = [0u8; 2];
    inbound.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(Refusal(None));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    inbound.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        inbound.write_all(&[5, 0xff]).await?;
        return Err(Refusal(None));
    }
    inbound.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    inbound.read_exact(&mut req).await?;
    if req[0] != 5 || req[1] != 1 {
        reply(&mut inbound, COMMAND_NOT_SUPPORTED).await?;
        return Err(Refusal(None));
    }
    let host = match req[3] {
        1 => {
            let mut b = [0u8; 4];
            inbound.read_exact(&mut b).await?;
            IpAddr::V4(Ipv4Addr::from(b)).to_string()
        }
        4 => {
            let mut b = [0u8; 16];
            inbound.read_exact(&mut b).await?;
            IpAddr::V6(Ipv6Addr::from(b)).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            inbound.read_exact(&mut len).await?;
            let mut b = vec![0u8; usize::from(len[0])];
            inbound.read_exact(&mut b).await?;
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => {
            reply(&mut inbound, COMMAND_NOT_SUPPORTED).await?;
            return Err(Refusal(None));
        }
    };
    let mut port = [0u8; 2];
    inbound.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    let target = match resolve(policy, &host, port).await {
        Ok(a) => a,
        Err(e) => {
            let blocked = e.code == "blocked_target";
            reply(
                &mut inbound,
                if blocked {
                    NOT_ALLOWED
                } else {
                    HOST_UNREACHABLE
                },
            )
            .await?;
            return Err(Refusal(
                blocked.then(|| format!("{host}:{port}: {}", e.message)),
            ));
        }
    };
    let mut outbound = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            reply(&mut inbound, HOST_UNREACHABLE).await?;
            return Err(e.into());
        }
    };
    let _ = outbound.set_nodelay(true);
    reply(&mut inbound, SUCCEEDED).await?;
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    Ok(())
}
