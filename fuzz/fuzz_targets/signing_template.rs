//! Signature templates (`herald_core::signing`): any content template, header template,
//! encoding and header prefix either fails `validate` with a field name, or signs without
//! panicking and produces headers that are valid HTTP header names and values (a broken header
//! would make the HTTP client refuse the request or, worse, split it).
//!
//! Input: up to four `\n`-separated parts — content template, header template, header prefix,
//! and a last part whose first byte picks the encoding and whose rest is the event id — with
//! the same templates also tried as per-destination overrides of the standard configuration.

#![no_main]

use std::collections::BTreeMap;

use herald_core::signing::{
    self, Message, Secrets, SignatureEncoding, SignatureOverrides, SigningConfig, SigningMode,
};
use libfuzzer_sys::fuzz_target;

fn check(cfg: &SigningConfig, event_id: &str) {
    let mut metadata = BTreeMap::new();
    metadata.insert("source".to_string(), "fuzz".to_string());
    let now = jiff::Timestamp::from_second(1_764_579_600).unwrap();
    let msg = Message {
        event_id,
        topic: "order.created",
        timestamp: now,
        body: br#"{"id":1}"#,
        metadata: &metadata,
        idempotency_key: "dlv_0123",
    };
    let secrets = Secrets {
        current: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        previous: Some(("old-secret", now + jiff::SignedDuration::from_secs(60))),
    };
    for (name, value) in signing::headers(cfg, &msg, &secrets, now) {
        assert!(
            http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
            "invalid header name {name:?} from {cfg:?}"
        );
        assert!(
            http::HeaderValue::from_str(&value).is_ok(),
            "invalid value {value:?} of header {name} from {cfg:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let content = parts.next().unwrap_or_default().to_string();
    let header = parts.next().unwrap_or_default().to_string();
    let prefix = parts.next().unwrap_or_default().to_string();
    let last = parts.next().unwrap_or_default();
    let encoding = if last.bytes().next().unwrap_or(0) % 2 == 0 {
        SignatureEncoding::Hex
    } else {
        SignatureEncoding::Base64
    };
    let event_id = last.get(1..).unwrap_or("evt_1");

    let mut cfg = SigningConfig::outpost_default();
    cfg.content_template = content.clone();
    cfg.header_template = header.clone();
    cfg.header_prefix = prefix;
    cfg.encoding = encoding;
    match cfg.validate() {
        Ok(()) => check(&cfg, event_id),
        Err(e) => assert!(!e.field.is_empty() && !e.problem.is_empty()),
    }

    // The same templates as a destination's overrides of the server's standard settings.
    let overrides = SignatureOverrides {
        content_template: Some(content),
        header_template: Some(header),
        encoding: Some(encoding),
    };
    let merged = SigningConfig::new(SigningMode::Standard).with_overrides(&overrides);
    if merged.validate().is_ok() {
        check(&merged, event_id);
    }
});
