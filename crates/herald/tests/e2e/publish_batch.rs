//! `POST /publish/batch` end to end: one result per event (accepted, refused, duplicate), the
//! accepted events delivered, the whole-request refusals (shape, size, credentials).

use herald_testkit::{Herald, Receiver};
use serde_json::{Value, json};

async fn batch(h: &Herald, token: Option<&str>, body: Value) -> (u16, Value) {
    match token {
        Some(t) => h.call_as(t, "POST", "/publish/batch", Some(body)).await,
        None => h.call("POST", "/publish/batch", Some(body)).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_event_and_delivers_the_accepted_ones() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    let dest = h
        .webhook(
            "acme",
            &rx.url("/hook"),
            json!({"topics": ["user.created"], "config": {"url": rx.url("/hook")}}),
        )
        .await;
    let dest_id = dest["id"].as_str().unwrap().to_string();
    let (status, v) = batch(
        &h,
        None,
        json!({"events": [
            {"id": "b1", "tenant_id": "acme", "topic": "user.created", "data": {"n": 1}},
            {"tenant_id": "acme", "topic": 7},
            {"id": "b1", "tenant_id": "acme", "topic": "user.created", "data": {"n": 99}},
            {"tenant_id": "acme", "topic": "user.created", "data": {"n": 2}},
            "not an event",
            {"id": "b3", "tenant_id": "nobody", "topic": "user.created", "data": {}},
            {"id": "b4", "tenant_id": "acme", "topic": "other.topic", "data": {}},
        ]}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let r = v["results"].as_array().expect("results");
    assert_eq!(r.len(), 7, "{v}");
    for (i, item) in r.iter().enumerate() {
        assert_eq!(item["index"], i, "{item}");
    }
    assert_eq!(
        r[0],
        json!({"index": 0, "id": "b1", "duplicate": false, "destination_ids": [dest_id], "tenant_found": true})
    );
    // An invalid event: the single publish's 422, its fields named inside the batch.
    let e1 = &r[1]["error"];
    assert_eq!(e1["status"], 422, "{e1}");
    let lines: Vec<&str> = e1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&"events[1].topic: expected a string, got a number"),
        "{lines:?}"
    );
    assert!(lines.contains(&"events[1].data: is required"), "{lines:?}");
    assert!(
        e1["message"]
            .as_str()
            .unwrap()
            .contains("events[1].data: is required")
    );
    // The same id again in the batch: a duplicate of the first.
    assert_eq!(
        r[2],
        json!({"index": 2, "id": "b1", "duplicate": true, "destination_ids": [dest_id], "tenant_found": true})
    );
    // A generated id.
    assert_eq!(r[3]["duplicate"], false);
    let generated = r[3]["id"].as_str().unwrap().to_string();
    assert!(generated.starts_with("evt_"), "{generated}");
    assert_eq!(r[4]["error"]["status"], 422);
    assert_eq!(
        r[4]["error"]["data"],
        json!(["events[4]: expected a JSON object, got a string"])
    );
    assert_eq!(r[5]["tenant_found"], false, "{}", r[5]);
    assert_eq!(r[5]["destination_ids"], json!([]));
    assert_eq!(r[6]["destination_ids"], json!([]));

    // Exactly the two accepted events that match arrive, each once.
    let got = rx.wait_for(2).await;
    let mut bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["n"].as_i64());
    assert_eq!(bodies, [json!({"n": 1}), json!({"n": 2})]);
    let ev = h.ok("GET", "/events/b1?tenant_id=acme", None).await;
    assert_eq!(
        ev["data"],
        json!({"n": 1}),
        "the first b1 is the one stored"
    );

    // The same batch again: every accepted id is a duplicate now, nothing is delivered again.
    let (status, v) = batch(
        &h,
        None,
        json!({"events": [
            {"id": "b1", "tenant_id": "acme", "topic": "user.created", "data": {"n": 1}},
            {"id": "b5", "tenant_id": "acme", "topic": "user.created", "data": {"n": 5}},
        ]}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(v["results"][0]["duplicate"], true);
    assert_eq!(v["results"][1]["duplicate"], false);
    let got = rx.wait_for(3).await;
    assert_eq!(got.last().unwrap().json(), json!({"n": 5}));
    assert_eq!(
        h.attempts("b1", |a| !a.is_empty()).await.len(),
        1,
        "b1 was delivered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_problems_are_refused_with_nothing_stored() {
    let h = Herald::start(&[("HERALD_MAX_BATCH_BODY_BYTES", "3000000")]).await;
    let one = json!({"tenant_id": "acme", "topic": "t", "data": {}});
    for (body, status, needle) in [
        (
            json!([one]),
            422,
            "body: expected a JSON object, got an array",
        ),
        (json!({}), 422, "events: is required"),
        (
            json!({"events": one}),
            422,
            "events: expected an array of events, got an object",
        ),
        (
            json!({"events": []}),
            422,
            "events: must hold at least one event",
        ),
        (
            json!({"events": vec![one.clone(); 1001]}),
            422,
            "events: holds 1001 events; one request takes at most 1000",
        ),
    ] {
        let (s, v) = batch(&h, None, body).await;
        assert_eq!(s, status, "{v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(needle),
            "{needle} not in {v}"
        );
    }
    let (s, v) = h
        .call_as("", "POST", "/publish/batch", Some(json!({"events": [one]})))
        .await;
    assert_eq!(s, 401, "{v}");

    // Its own body limit: 1,000 events of about 1.5 KB (over `max_body_bytes`, 1 MiB) are
    // accepted here, while the single publish keeps the smaller limit...
    let pad = "x".repeat(1500);
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("big{i}"), "tenant_id": "acme", "topic": "t", "data": {"pad": pad}}))
        .collect();
    let (s, v) = batch(&h, None, json!({ "events": events })).await;
    assert_eq!(s, 202, "{}", v["message"]);
    assert_eq!(v["results"].as_array().unwrap().len(), 1000);
    let (s, v) = h
        .call(
            "POST",
            "/publish",
            Some(
                json!({"tenant_id": "acme", "topic": "t", "data": {"pad": "y".repeat(1_100_000)}}),
            ),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    // ...and a body over `max_batch_body_bytes` is a 413 naming that limit, nothing stored.
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("huge{i}"), "tenant_id": "acme", "topic": "t", "data": {"pad": "z".repeat(3000)}}))
        .collect();
    let (s, v) = batch(&h, None, json!({ "events": events })).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(
        v["message"],
        "request body is larger than the limit of 3000000 bytes"
    );
    let (s, _) = h.call("GET", "/events/huge0?tenant_id=acme", None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publish_takes_the_publish_scope_and_a_bound_key_only_for_its_tenant() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/acme", None).await;
    let key = |scopes: Value, tenant: Option<&str>| {
        let h = &h;
        let tenant = tenant.map(str::to_string);
        async move {
            let mut body = json!({"name": "k", "scopes": scopes});
            if let Some(t) = tenant {
                body["tenant_id"] = json!(t);
            }
            let k = h.ok("POST", "/api-keys", Some(body)).await;
            k["secret"].as_str().unwrap().to_string()
        }
    };
    let ev =
        |id: &str, tenant: &str| json!({"id": id, "tenant_id": tenant, "topic": "t", "data": {}});

    let read = key(json!(["read"]), None).await;
    let (s, v) = batch(&h, Some(&read), json!({"events": [ev("r1", "acme")]})).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["data"]["required_scope"], "publish");

    let token = h.ok("GET", "/tenants/acme/token", None).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = batch(&h, Some(&token), json!({"events": [ev("t1", "acme")]})).await;
    assert_eq!(s, 403, "tenant tokens do not publish");

    let bound = key(json!(["publish"]), Some("acme")).await;
    let (s, v) = batch(
        &h,
        Some(&bound),
        json!({"events": [ev("k1", "acme"), ev("k2", "globex")]}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        v["message"],
        "events[1].tenant_id: this API key is bound to another tenant"
    );
    let (s, _) = h.call("GET", "/events/k1?tenant_id=acme", None).await;
    assert_eq!(s, 404, "nothing of a refused request is stored");
    let (s, v) = batch(&h, Some(&bound), json!({"events": [ev("k1", "acme")]})).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["results"][0]["duplicate"], false);
    let open = key(json!(["publish"]), None).await;
    let (s, v) = batch(
        &h,
        Some(&open),
        json!({"events": [ev("k1", "acme"), ev("k3", "globex")]}),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["results"][0]["duplicate"], true);
    assert_eq!(v["results"][1]["duplicate"], false);
}
