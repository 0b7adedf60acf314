//! A wire-faithful Azure Service Bus server for the `azure_servicebus` tests: it serves the
//! REST send endpoint `POST /{queue}/messages` and checks every request's SAS token exactly as
//! the Service Bus documentation defines it (resource URI, key name, expiry, HMAC-SHA256
//! signature), answering 401 for a bad token and 404 for an unknown entity. It is not a broker:
//! it keeps what it accepted in memory for the test to read.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

/// The shared access key name the server accepts.
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
/// The shared access key the server accepts.
pub const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
/// The queue the server accepts messages for.
pub const QUEUE: &str = "orders";
/// A queue the server answers for only after [`SLOW_DELAY`].
pub const SLOW: &str = "slow";
/// How long [`SLOW`] takes to answer.
pub const SLOW_DELAY: Duration = Duration::from_secs(3);

/// One message the server accepted.
#[derive(Clone, Debug)]
pub struct Message {
    /// Request headers (broker properties and custom properties).
    pub headers: HeaderMap,
    /// The message body.
    pub body: Bytes,
}

/// What the server accepted.
#[derive(Clone, Default)]
pub struct ServiceBus {
    /// Messages accepted, in order.
    pub accepted: Arc<Mutex<Vec<Message>>>,
    /// Why each refused request was refused.
    pub refused: Arc<Mutex<Vec<String>>>,
    /// Requests received, whatever the answer.
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Checks a SAS token for `resource` as the Service Bus documentation defines it.
fn check_sas(auth: &str, resource: &str) -> Result<(), String> {
    let rest = auth
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let fields: Vec<(&str, &str)> = rest.split('&').filter_map(|p| p.split_once('=')).collect();
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .ok_or(format!("no {k}"))
    };
    let (sr, sig, se, skn) = (get("sr")?, get("sig")?, get("se")?, get("skn")?);
    if percent_decode(sr) != resource {
        return Err(format!("sr {sr} is not {resource}"));
    }
    if skn != KEY_NAME {
        return Err(format!("unknown key name {skn}"));
    }
    let expiry: i64 = se.parse().map_err(|_| "se is not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if expiry <= now {
        return Err("token expired".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if percent_decode(sig) != expected {
        return Err("signature mismatch".into());
    }
    Ok(())
}

impl ServiceBus {
    /// Serves `POST /{queue}/messages`; returns the server's base URL.
    pub async fn start(&self) -> (String, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let bus = self.clone();
        let app = axum::Router::new().route(
            "/{entity}/messages",
            axum::routing::post(
                move |axum::extract::Path(entity): axum::extract::Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let bus = bus.clone();
                    bus.requests
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // The resource is the URL the client addressed, as Service Bus sees it.
                    let host = headers
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let resource = format!("http://{host}/{entity}");
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        if let Err(why) = check_sas(auth, &resource) {
                            bus.refused.lock().push(why.clone());
                            return (StatusCode::UNAUTHORIZED, why);
                        }
                        if entity == SLOW {
                            tokio::time::sleep(SLOW_DELAY).await;
                        } else if entity != QUEUE {
                            return (
                                StatusCode::NOT_FOUND,
                                "<Error><Code>404</Code></Error>".into(),
                            );
                        }
                        bus.accepted.lock().push(Message { headers, body });
                        (StatusCode::CREATED, String::new())
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, addr.port())
    }
}

/// A connection string for the namespace with `key`.
pub fn connection_string(key: &str) -> String {
    format!(
        "Endpoint=sb://herald-test.servicebus.windows.net/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key}"
    )
}
