//! The `email` type over the API, against a real SMTP server (aiosmtpd from PyPI): an operator
//! alert arrives as a readable mail with the JSON attached, SMTP `4xx` replies are retried and
//! `5xx` replies are permanent, and tenants may use the type only where the operator allows it.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use herald_testkit::servers::{Smtp, mail_header};
use herald_testkit::{Herald, Receiver};
use serde_json::{Value, json};

fn email(smtp: &Smtp, topics: Value) -> Value {
    json!({
        "type": "email",
        "topics": topics,
        "config": {
            "to": "ops@example.com, oncall@example.com",
            "from": "Herald <herald@example.com>",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port().to_string(),
            "tls": "none",
        },
    })
}

fn attachment(mail: &Value) -> Value {
    let att = mail["attachments"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["filename"] == "event.json"))
        .unwrap_or_else(|| panic!("no event.json in {mail}"));
    assert_eq!(att["content_type"], "application/json");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(att["data_b64"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_alert_arrives_as_a_readable_mail() {
    let smtp = Smtp::start(None);
    let rx = Receiver::start().await;
    rx.default_status.store(500, Ordering::SeqCst);
    let h = Herald::start(&[("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "2")]).await;
    let op = h
        .ok(
            "POST",
            "/operator-events/destinations",
            Some(email(&smtp, json!(["alert.destination.disabled"]))),
        )
        .await;
    assert_eq!(op["type"], "email");
    let d = h.webhook("shop", &rx.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap();
    for i in 0..2 {
        h.publish(json!({"tenant_id": "shop", "topic": "order.paid", "id": format!("m{i}"), "eligible_for_retry": false, "data": {}}))
            .await;
    }
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails.len(), 1, "only the subscribed topic: {mails:?}");
    let m = &mails[0];
    assert_eq!(
        mail_header(m, "subject").as_deref(),
        Some("[Herald] alert.destination.disabled")
    );
    assert_eq!(
        mail_header(m, "from").as_deref(),
        Some("Herald <herald@example.com>")
    );
    let to = mail_header(m, "to").unwrap();
    assert!(
        to.contains("ops@example.com") && to.contains("oncall@example.com"),
        "{to}"
    );
    assert_eq!(
        m["rcpt_tos"],
        json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(
        mail_header(m, "x-herald-topic").as_deref(),
        Some("alert.destination.disabled")
    );
    let text = m["text"].as_str().unwrap();
    for needle in [
        "A destination was disabled automatically: too many consecutive failures.",
        &format!("Destination: {id} (type webhook, tenant shop)"),
        "its pending deliveries were cancelled",
        &format!("PUT /api/v1/tenants/shop/destinations/{id}/enable"),
        "-- event JSON",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let body = attachment(m);
    assert_eq!(body["topic"], "alert.destination.disabled");
    assert_eq!(body["tenant_id"], "shop");
    assert_eq!(body["data"]["destination"]["id"], id);
    // The mail is signed like a webhook: the signature covers the attachment's bytes.
    let secret = op["credentials"]["signing_secret"].as_str().unwrap();
    let att = m["attachments"][0]["data_b64"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(att)
        .unwrap();
    let mut headers = http::HeaderMap::new();
    for n in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(
            n,
            http::HeaderValue::from_str(&mail_header(m, n).unwrap()).unwrap(),
        );
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&raw, &headers)
        .expect("mail signature");
    // The attempt is recorded with the SMTP code.
    let atts = h
        .ok(
            "GET",
            &format!(
                "/operator-events/attempts?destination_id={}",
                op["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(atts["models"][0]["code"], "250", "{atts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_4xx_is_retried_and_5xx_is_permanent() {
    let smtp = Smtp::start(None);
    let mut env = herald_testkit::herald::retry_fast();
    env.push(("HERALD_DELIVERY_EMAIL_FOR_TENANTS", "true"));
    env.push(("HERALD_DELIVERY_POLL_INTERVAL_MS", "100"));
    let h = Herald::start(&env).await;
    h.create("mail", email(&smtp, json!("*"))).await;

    smtp.reply(Some("451 4.3.0 mailbox busy, try again later"));
    let busy = h.publish_event("mail", "order.paid", json!({"n": 1})).await;
    let first = h.attempts(&busy, |a| !a.is_empty()).await;
    assert_eq!(first[0]["status"], "failed");
    assert_eq!(first[0]["code"], "451");
    assert!(
        first[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("mailbox busy"),
        "{}",
        first[0]
    );
    smtp.reply(None);
    let all = h.attempts(&busy, herald_testkit::herald::succeeded).await;
    assert_eq!(all.len(), 2, "one retry after the 4xx: {all:?}");
    assert_eq!(all[1]["code"], "250");
    assert_eq!(smtp.wait_for(1).await.len(), 1);

    smtp.reply(Some("550 5.1.1 no such mailbox"));
    let refused = h.publish_event("mail", "order.paid", json!({"n": 2})).await;
    let got = h.attempts(&refused, |a| !a.is_empty()).await;
    assert_eq!(got[0]["status"], "failed");
    assert_eq!(got[0]["code"], "550");
    assert!(
        got[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("no such mailbox"),
        "{}",
        got[0]
    );
}

/// The driver's own classification, called as the engine calls it: a `4xx` reply is `Retry`,
/// a `5xx` reply `Permanent` (so the engine never schedules another attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_reply_codes_are_classified() {
    use herald_core::destination::Disposition;
    use herald_testkit::contract::{self, Fields};
    let smtp = Smtp::start(None);
    let registry = contract::registry();
    let d = contract::destination(
        &registry,
        "email",
        crate::contract::email::config(&smtp.addr()),
        Fields::new(),
    );
    let driver = contract::driver(&registry, &d);
    for (reply, code, permanent) in [
        ("451 4.3.0 try again later", "451", false),
        ("421 4.7.0 too many connections", "421", false),
        ("550 5.1.1 no such mailbox", "550", true),
        ("554 5.7.1 rejected", "554", true),
    ] {
        smtp.reply(Some(reply));
        let msg = contract::outbound(
            &registry,
            &d,
            "evt_1",
            "order.paid",
            &json!({}),
            contract::TIMEOUT,
        );
        let e = driver.deliver(&msg).await.expect_err(reply);
        assert_eq!(e.code, code, "{e:?}");
        assert_eq!(
            e.disposition == Disposition::Permanent,
            permanent,
            "{reply}: {e:?}"
        );
        if !permanent {
            assert!(matches!(e.disposition, Disposition::Retry { .. }), "{e:?}");
        }
    }
    assert!(smtp.messages().is_empty(), "nothing was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_use_email_only_where_the_operator_allows_it() {
    let smtp = Smtp::start(None);
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/t", None).await;
    let v = h
        .expect_rejected("t", &email(&smtp, json!("*")), "type")
        .await;
    assert!(v.to_string().contains("operator destinations only"), "{v}");
    let types = h.ok("GET", "/destination-types", None).await;
    assert!(
        !types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["type"] == "email"),
        "tenant types leave email out"
    );
    let (s, _) = h.call("GET", "/destination-types/email", None).await;
    assert_eq!(s, 404);
    let ops = h
        .ok("GET", "/operator-events/destination-types", None)
        .await;
    assert!(ops.as_array().unwrap().iter().any(|t| t["type"] == "email"));
    // Bad fields are 422s naming them.
    let mut bad = email(&smtp, json!(["alert.*"]));
    bad["config"]["to"] = json!("not-an-address");
    let (s, v) = h
        .call("POST", "/operator-events/destinations", Some(bad))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("config.to"), "{v}");
}
