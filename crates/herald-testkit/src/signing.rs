//! Signature checks with the independent `standardwebhooks` verifier, and the checks of the
//! engine's headers (id, timestamp, topic, metadata) as any protocol carries them.

/// A fixed Standard Webhooks secret for the tests.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Another valid secret, which must never verify what [`SECRET`] signed.
pub const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Whether a Standard Webhooks signature over `body` verifies with `secret`.
pub fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", id.parse().expect("webhook-id value"));
    headers.insert(
        "webhook-timestamp",
        timestamp.parse().expect("webhook-timestamp value"),
    );
    headers.insert(
        "webhook-signature",
        signature.parse().expect("webhook-signature value"),
    );
    wh.verify(body, &headers).is_ok()
}

/// A header's value from a list of (name, value), case-insensitively; fails the test when it
/// is missing.
pub fn header(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("header {name} missing from {headers:?}"))
}

/// Checks the engine's headers as any protocol carries them: the event id, the topic, the
/// `source` metadata (`tests`), a current timestamp, and a signature over `body` that
/// verifies with [`SECRET`] and not with another secret.
pub fn check_headers(headers: &[(String, String)], body: &[u8], event_id: &str, topic: &str) {
    let get = |k: &str| header(headers, k);
    assert_eq!(get("webhook-id"), event_id);
    assert_eq!(get("x-herald-topic"), topic);
    assert_eq!(get("x-herald-source"), "tests");
    let ts: i64 = get("webhook-timestamp").parse().expect("unix seconds");
    assert!((ts - jiff::Timestamp::now().as_second()).abs() < 300);
    let (id, ts, sig) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    );
    assert!(
        verify_standard(SECRET, &id, &ts, &sig, body),
        "the signature verifies with the destination's secret"
    );
    assert!(
        !verify_standard(OTHER_SECRET, &id, &ts, &sig, body),
        "a wrong secret must not verify"
    );
}
