//! `aws_sqs`, `aws_s3` and `aws_kinesis` in the Driver contract suite, against moto (a fresh
//! one per case, request authentication on: every request must carry a valid SigV4
//! signature), read back with boto3.

use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::contract_tests;
use herald_testkit::python::reader;
use herald_testkit::servers::{AWS_BUCKET, AWS_STREAM, Aws};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Which AWS type a case is for.
#[derive(Clone, Copy, PartialEq)]
pub enum Service {
    Sqs,
    S3,
    Kinesis,
}

pub struct AwsCase {
    service: Service,
    aws: Aws,
    /// SQS reads consume: what was read so far.
    got: Mutex<Vec<Delivered>>,
}

impl AwsCase {
    pub async fn new(service: Service) -> AwsCase {
        AwsCase {
            service,
            aws: Aws::start().await,
            got: Mutex::default(),
        }
    }

    fn config(&self, endpoint: &str) -> Fields {
        match self.service {
            Service::Sqs => fields(&[("queue_url", &self.aws.queue_url), ("endpoint", endpoint)]),
            // moto refuses the SigV4 signature of keys that need percent-encoding (the
            // default key has colons): a template without any (destinations::aws tests the
            // default key with authentication off).
            Service::S3 => fields(&[
                ("bucket", AWS_BUCKET),
                ("region", "us-east-1"),
                ("endpoint", endpoint),
                ("key_template", "join('', [metadata.\"event-id\", '.json'])"),
            ]),
            Service::Kinesis => fields(&[
                ("stream_name", AWS_STREAM),
                ("region", "us-east-1"),
                ("endpoint", endpoint),
            ]),
        }
    }
}

/// A JSON object of strings as (name, value) pairs.
fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl Case for AwsCase {
    fn kind(&self) -> &'static str {
        match self.service {
            Service::Sqs => "aws_sqs",
            Service::S3 => "aws_s3",
            Service::Kinesis => "aws_kinesis",
        }
    }

    fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.aws.server.port)
    }

    /// moto answers every request with `Connection: close`, so each of the scenario's three
    /// deliveries opens one.
    fn connections(&self) -> usize {
        3
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            self.config(&format!("http://{addr}")),
            fields(&[("key", &self.aws.key), ("secret", &self.aws.secret)]),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        match self.service {
            Service::Sqs => {
                let got = reader(
                    "sqs-read",
                    self.aws
                        .args(json!({"queue_url": self.aws.queue_url, "count": 1000, "wait": 1})),
                )
                .await;
                for m in got.as_array().unwrap() {
                    self.got.lock().push(Delivered {
                        body: m["body"].as_str().unwrap().as_bytes().to_vec(),
                        headers: pairs(&m["attributes"]),
                        native: Fields::new(),
                    });
                }
                self.got.lock().clone()
            }
            Service::S3 => {
                let got = reader("s3-read", self.aws.args(json!({"bucket": AWS_BUCKET}))).await;
                got.as_array()
                    .unwrap()
                    .iter()
                    .map(|o| Delivered {
                        body: o["body"].as_str().unwrap().as_bytes().to_vec(),
                        headers: pairs(&o["metadata"]),
                        native: fields(&[
                            ("key", o["key"].as_str().unwrap()),
                            (
                                "content_type",
                                o["content_type"].as_str().unwrap_or_default(),
                            ),
                        ]),
                    })
                    .collect()
            }
            Service::Kinesis => {
                let got =
                    reader("kinesis-read", self.aws.args(json!({"stream": AWS_STREAM}))).await;
                got.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        // The record is an envelope; its data member is the signed body.
                        let envelope: Value =
                            serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
                        Delivered {
                            body: serde_json::to_vec(&envelope["data"]).unwrap(),
                            headers: pairs(&envelope["metadata"]),
                            native: fields(&[(
                                "partition_key",
                                r["partition_key"].as_str().unwrap(),
                            )]),
                        }
                    })
                    .collect()
            }
        }
    }

    async fn bad_credentials(&self) -> Auth {
        Auth::Refused {
            config: self.config(&self.aws.server.url()),
            credentials: fields(&[("key", &self.aws.key), ("secret", "wrong-secret")]),
            code: "auth_failed",
            mentions: &["credentials", "secret", "key", "signature"],
            server_says: None,
            keep: Box::new(()),
        }
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        match self.service {
            Service::Sqs => {}
            Service::S3 => {
                // The default key ends with the event id.
                assert!(
                    got.native["key"].contains(&sent.event_id),
                    "{:?}",
                    got.native
                );
                assert_eq!(got.native["content_type"], "application/json");
            }
            Service::Kinesis => assert_eq!(got.native["partition_key"], sent.event_id),
        }
    }
}

mod sqs {
    use super::*;
    contract_tests!(suite, AwsCase::new(Service::Sqs).await);
}

mod s3 {
    use super::*;
    contract_tests!(suite, AwsCase::new(Service::S3).await);
}

mod kinesis {
    use super::*;
    contract_tests!(suite, AwsCase::new(Service::Kinesis).await);
}
