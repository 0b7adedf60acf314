//! What the AWS types (`aws_sqs`, `aws_s3`, `aws_kinesis`) share: their typed
//! [`Credentials`] (static AWS credentials; `secret` is the AWS secret access key, the
//! signing secret is the common `signing_secret`), the [`Region`] field, the Signature
//! Version 4 signer, and how AWS error codes map onto retry or permanent failure.
//!
//! Herald signs its own requests instead of using the AWS SDK: each type sends exactly one
//! API call (`SendMessage`, `PutObject`, `PutRecord`), and SigV4 over the shared `reqwest`
//! client costs about 150 lines and no extra dependencies, where the SDK crates add several
//! minutes of compile time. The signer is checked against AWS's published example and, end
//! to end, by moto verifying every signature (`crates/herald/tests/destinations_aws.rs`).

use std::borrow::Cow;

use herald_core::Secret;
use herald_core::destination::DeliveryError;
use hmac::{Hmac, Mac};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use crate::support::http::Reply;

#[cfg(feature = "aws_kinesis")]
pub mod kinesis;
#[cfg(feature = "aws_s3")]
pub mod s3;
#[cfg(feature = "aws_sqs")]
pub mod sqs;

/// `credentials` of every AWS destination: static AWS credentials. The signing secret is
/// the common `signing_secret`; `secret` here is the AWS secret access key.
#[derive(Clone, Deserialize, JsonSchema)]
pub struct Credentials {
    /// Access key ID
    ///
    /// AWS access key ID.
    pub key: String,
    /// Secret access key
    ///
    /// AWS secret access key.
    pub secret: Secret,
    /// Session token
    ///
    /// Optional AWS session token (temporary credentials).
    pub session: Option<Secret>,
}

/// An AWS region name (`us-east-1`, `eu-central-2`, `us-gov-west-1`, …). Each type's field
/// states the pattern it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region(pub String);

impl Region {
    /// The region name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let r = raw.trim();
        if valid_region(r) {
            Ok(Self(r.to_string()))
        } else {
            Err(serde::de::Error::custom(format!(
                "{raw:?} is not an AWS region name like us-east-1"
            )))
        }
    }
}

impl JsonSchema for Region {
    fn schema_name() -> Cow<'static, str> {
        "Region".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// Checks a region name (`us-east-1`, `eu-central-2`, `us-gov-west-1`, …).
pub fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(any(feature = "aws_sqs", feature = "aws_kinesis"))]
/// The pattern served for `region` fields (`aws_s3` serves the contract's own, narrower one).
pub const REGION_PATTERN: &str = "^[a-z]{2}(-[a-z]+)+-[0-9]+$";

/// Characters left as they are by AWS URI encoding (RFC 3986 unreserved).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// AWS URI encoding; `/` is kept when `keep_slash`.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[cfg(any(feature = "aws_sqs", feature = "aws_kinesis"))]
/// One call to an AWS JSON-protocol API (SQS, Kinesis): what differs between services.
pub(crate) struct JsonCall<'a> {
    /// Signing name of the service (`sqs`, `kinesis`).
    pub service: &'a str,
    /// The protocol version's media type (`application/x-amz-json-1.0` or `-1.1`).
    pub content_type: &'a str,
    /// The `x-amz-target` operation, e.g. `AmazonSQS.SendMessage`.
    pub target: &'a str,
}

#[cfg(any(feature = "aws_sqs", feature = "aws_kinesis"))]
/// Signs `body` as a JSON-protocol call and POSTs it to `endpoint` within `timeout`.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    creds: &Credentials,
    region: &str,
    endpoint: &url::Url,
    call: JsonCall<'_>,
    body: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    let headers = sign(
        creds,
        region,
        call.service,
        Request {
            method: "POST",
            url: endpoint,
            headers: vec![
                ("content-type".into(), call.content_type.into()),
                ("x-amz-target".into(), call.target.into()),
            ],
            payload_hash: sha256_hex(&body),
            double_encode_path: true,
            content_hash_header: false,
        },
        jiff::Timestamp::now(),
    );
    let mut req = client.post(endpoint.clone()).timeout(timeout).body(body);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.send().await
}

/// One request to sign.
pub(crate) struct Request<'a> {
    /// `GET`, `POST`, `PUT`.
    pub method: &'a str,
    /// The URL the request goes to (its path exactly as sent, already percent-encoded).
    pub url: &'a url::Url,
    /// Headers that are sent and signed (names in any case); `host`, `x-amz-date`,
    /// `x-amz-security-token` and (when asked) `x-amz-content-sha256` are added by [`sign`].
    pub headers: Vec<(String, String)>,
    /// SHA-256 of the body, lowercase hex.
    pub payload_hash: String,
    /// S3 signs the path as sent; every other service encodes it once more.
    pub double_encode_path: bool,
    /// Send (and sign) `x-amz-content-sha256`; S3 requires it, the JSON APIs do not.
    pub content_hash_header: bool,
}

/// Signs a request with SigV4; returns every header to send (the given ones, the added
/// `x-amz-*` ones and `authorization`). `host` is left for the HTTP client to send.
pub(crate) fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    req: Request<'_>,
    now: jiff::Timestamp,
) -> Vec<(String, String)> {
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let host = match req.url.port() {
        Some(p) => format!("{}:{p}", req.url.host_str().unwrap_or_default()),
        None => req.url.host_str().unwrap_or_default().to_string(),
    };
    let mut headers: Vec<(String, String)> = req
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if req.content_hash_header {
        headers.push(("x-amz-content-sha256".into(), req.payload_hash.clone()));
    }
    if let Some(token) = creds.session.as_ref().filter(|t| !t.is_empty()) {
        headers.push(("x-amz-security-token".into(), token.expose().to_string()));
    }
    let mut signed: Vec<(String, String)> = headers.clone();
    signed.push(("host".into(), host));
    signed.sort_by(|a, b| a.0.cmp(&b.0));

    let path = if req.url.path().is_empty() {
        "/"
    } else {
        req.url.path()
    };
    let canonical_uri = if req.double_encode_path {
        uri_encode(path, true)
    } else {
        path.to_string()
    };
    let mut query: Vec<(String, String)> = req
        .url
        .query_pairs()
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = signed
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", collapse_spaces(v)))
        .collect();
    let signed_names = signed
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_names}\n{}",
        req.method, req.payload_hash
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret.expose()).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, to_sign.as_bytes()));
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            creds.key
        ),
    ));
    headers
}

/// Trims and collapses runs of spaces, as SigV4 canonical headers require.
fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error code of an AWS error response: `__type` of the JSON protocols (with its
/// `namespace#` prefix removed), `<Code>` of the XML ones, or the `x-amzn-errortype` header.
pub(crate) fn error_code(body: &str, header: Option<&str>) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["__type", "code", "Code"] {
            if let Some(t) = v.get(key).and_then(|t| t.as_str()) {
                return Some(t.rsplit('#').next().unwrap_or(t).to_string());
            }
        }
    }
    if let Some(start) = body.find("<Code>") {
        let rest = &body[start + 6..];
        if let Some(end) = rest.find("</Code>") {
            return Some(rest[..end].trim().to_string());
        }
    }
    header.map(|h| h.split(':').next().unwrap_or(h).to_string())
}

/// Credential and signature errors: the destination's settings are wrong, so retrying the
/// same request cannot succeed.
const AUTH_ERRORS: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
];

/// Throttling and capacity errors: retried (AWS asks for back-off, not a different request).
const THROTTLING_ERRORS: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "KMSThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "RequestExpired",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
];

/// Classifies a non-2xx AWS response.
///
/// - 5xx, 429 and the throttling codes → retry (honouring `Retry-After`);
/// - credential/signature codes → permanent, code `auth_failed`;
/// - any other 4xx (missing queue/bucket/stream, validation errors) → permanent.
pub(crate) fn classify(reply: &Reply, error_type_header: Option<&str>) -> DeliveryError {
    let code = error_code(&reply.body, error_type_header);
    let name = code.as_deref().unwrap_or("");
    let what = match &code {
        Some(c) => format!("AWS answered HTTP {} {c}", reply.status),
        None => format!("AWS answered HTTP {}", reply.status),
    };
    if AUTH_ERRORS.contains(&name) {
        return reply.failure(
            false,
            "auth_failed",
            format!("{what}: the credentials or their permissions are wrong; not retried"),
        );
    }
    if reply.status >= 500 || reply.status == 429 || THROTTLING_ERRORS.contains(&name) {
        return reply.failure(true, &reply.status.to_string(), what);
    }
    reply.failure(
        false,
        &reply.status.to_string(),
        format!("{what}; not retried"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's worked example of a SigV4 signature (IAM `ListUsers`, 2015-08-30).
    #[test]
    fn signs_the_published_example() {
        let creds = Credentials {
            key: "AKIDEXAMPLE".into(),
            secret: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session: None,
        };
        let url = url::Url::parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
            .unwrap();
        let now: jiff::Timestamp = "2015-08-30T12:36:00Z".parse().unwrap();
        let headers = sign(
            &creds,
            "us-east-1",
            "iam",
            Request {
                method: "GET",
                url: &url,
                headers: vec![(
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                )],
                payload_hash: sha256_hex(b""),
                double_encode_path: true,
                content_hash_header: false,
            },
            now,
        );
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn error_codes_from_json_xml_and_headers() {
        assert_eq!(
            error_code(
                r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"x"}"#,
                None
            )
            .as_deref(),
            Some("QueueDoesNotExist")
        );
        assert_eq!(
            error_code("<Error><Code>NoSuchBucket</Code></Error>", None).as_deref(),
            Some("NoSuchBucket")
        );
        assert_eq!(
            error_code("", Some("InvalidClientTokenId:http://internal")).as_deref(),
            Some("InvalidClientTokenId")
        );
    }

    #[test]
    fn classification() {
        let r = |status, body: &str| Reply {
            status,
            headers: Default::default(),
            body: body.into(),
            truncated: false,
            retry_after: None,
        };
        let auth = classify(&r(403, r#"{"__type":"InvalidClientTokenId"}"#), None);
        assert_eq!(auth.code, "auth_failed");
        assert_eq!(
            auth.disposition,
            herald_core::destination::Disposition::Permanent
        );
        let throttled = classify(&r(400, r#"{"__type":"ThrottlingException"}"#), None);
        assert!(matches!(
            throttled.disposition,
            herald_core::destination::Disposition::Retry { .. }
        ));
        let missing = classify(&r(400, r#"{"__type":"ResourceNotFoundException"}"#), None);
        assert_eq!(
            missing.disposition,
            herald_core::destination::Disposition::Permanent
        );
        assert!(matches!(
            classify(&r(503, ""), None).disposition,
            herald_core::destination::Disposition::Retry { .. }
        ));
    }

    #[test]
    fn regions_and_encoding() {
        assert!(valid_region("us-east-1"));
        assert!(valid_region("us-gov-west-1"));
        assert!(!valid_region("us-east"));
        assert!(!valid_region("US-EAST-1"));
        assert_eq!(uri_encode("a b/c~", true), "a%20b/c~");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
