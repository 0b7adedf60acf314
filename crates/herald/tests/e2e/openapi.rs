//! The OpenAPI document a running Herald serves, against the Outpost contract
//! (`shared/reference/outpost-openapi.yaml`, beside the repository): every contract path and
//! method is there with compatible request and response schemas, every operation the contract
//! does not have is marked `x-herald-extension`, and `/metrics` (mounted by the binary) is
//! served as documented. The destination shapes come from this build's real types.
//!
//! "Compatible" is checked per direction. For a **response**, whatever Herald may send must be
//! something the contract allows: every contract property is documented with a compatible
//! type, what the contract requires Herald requires too, Herald is nullable only where the
//! contract is, Herald's enum values are among the contract's, and each of Herald's `oneOf`
//! variants matches one of the contract's. For a **request**, whatever the contract lets a
//! client send must be accepted: every contract property exists with a compatible type,
//! Herald requires nothing the contract does not, accepts `null` wherever the contract does,
//! and has a variant for every contract variant. Formats and descriptions are not compared.

use std::collections::BTreeSet;

use herald_testkit::Herald;
use serde_json::{Value, json};

/// Contract operations Herald does not serve, and why. The contract itself says of both that
/// they are "only available for the managed version"; a self-hosted server is configured by
/// its own settings.
const NOT_SERVED: [(&str, &str); 2] = [("get", "/config"), ("patch", "/config")];

/// Destination types of the contract this build has no type for.
const TYPES_NOT_BUILT: [&str; 1] = ["hookdeck"];

/// Optional contract response properties Herald never sends, and why.
const NEVER_SENT: [(&str, &str); 1] = [(
    "setup_link",
    "no Herald destination type has a managed setup flow to link to",
)];

/// Fields the contract requires that Herald requires only in some configurations, so a
/// destination read back may lack them (documented per type in docs/destinations.md).
const REQUIRED_SOMETIMES: [(&str, &str, &str); 4] = [
    (
        "kafka",
        "config.sasl_mechanism",
        "empty for brokers without authentication, as Outpost accepts",
    ),
    (
        "kafka",
        "credentials.username",
        "only with a SASL mechanism",
    ),
    (
        "kafka",
        "credentials.password",
        "only with a SASL mechanism",
    ),
    (
        "gcp_pubsub",
        "credentials.service_account_json",
        "not with an emulator endpoint",
    ),
];

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

fn contract() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/outpost-openapi.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("the Outpost contract must be beside the repository at {path}: {e}")
    });
    serde_norway::from_str(&text).expect("the contract is YAML")
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dir {
    Request,
    Response,
}

/// Two documents and the problems found so far.
struct Check<'a> {
    contract: &'a Value,
    herald: &'a Value,
    problems: Vec<String>,
}

/// A schema with its `$ref`s followed (in its own document).
fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = s.get("$ref").and_then(Value::as_str) else {
            return s;
        };
        let pointer = r.trim_start_matches('#');
        s = doc.pointer(pointer).unwrap_or(&Value::Null);
    }
    s
}

/// The JSON types a schema allows (without `null`), and whether it allows `null`. An empty
/// set means any type.
fn types(s: &Value) -> (BTreeSet<String>, bool) {
    let mut out = BTreeSet::new();
    match &s["type"] {
        Value::String(t) => {
            out.insert(t.clone());
        }
        Value::Array(ts) => out.extend(ts.iter().filter_map(Value::as_str).map(String::from)),
        _ => {}
    }
    let nullable = out.remove("null") || s["nullable"] == true;
    (out, nullable)
}

fn alternatives(s: &Value) -> Option<&Vec<Value>> {
    s.get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(Value::as_array)
}

fn required(s: &Value) -> BTreeSet<String> {
    s["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

/// The destination type a variant is fixed to (`type: {enum: [one]}`), if it is.
fn fixed_type(doc: &Value, s: &Value) -> Option<String> {
    let t = resolve(doc, &resolve(doc, s)["properties"]["type"]);
    match t["enum"].as_array().map(Vec::as_slice) {
        Some([Value::String(one)]) => Some(one.clone()),
        _ => t["const"].as_str().map(String::from),
    }
}

impl Check<'_> {
    /// Compares a contract schema with Herald's at `at`; returns whether they are compatible.
    fn schema(&mut self, at: &str, c: &Value, h: &Value, dir: Dir, depth: usize) -> bool {
        let before = self.problems.len();
        if depth > 12 {
            return true;
        }
        let c = resolve(self.contract, c);
        let h = resolve(self.herald, h);
        // Choices: pair variants.
        if let Some(cs) = alternatives(c) {
            let hs: Vec<Value> = alternatives(h).cloned().unwrap_or_else(|| vec![h.clone()]);
            match dir {
                Dir::Response => {
                    for (i, hv) in hs.iter().enumerate() {
                        self.variant(&format!("{at}[variant {i}]"), cs, hv, dir, depth, true);
                    }
                }
                Dir::Request => {
                    for (i, cv) in cs.iter().enumerate() {
                        self.variant(&format!("{at}[variant {i}]"), &hs, cv, dir, depth, false);
                    }
                }
            }
            return self.problems.len() == before;
        }
        if let Some(hs) = alternatives(h) {
            // Herald offers a choice where the contract has one shape.
            match dir {
                Dir::Response => {
                    for (i, hv) in hs.clone().iter().enumerate() {
                        self.schema(&format!("{at}[variant {i}]"), c, hv, dir, depth + 1);
                    }
                }
                Dir::Request => {
                    let hs = hs.clone();
                    let ok = hs.iter().any(|hv| {
                        let mut probe = Check {
                            contract: self.contract,
                            herald: self.herald,
                            problems: Vec::new(),
                        };
                        probe.schema(at, c, hv, dir, depth + 1)
                    });
                    if !ok {
                        self.problems.push(format!(
                            "{at}: no variant of Herald's accepts the contract's shape"
                        ));
                    }
                }
            }
            return self.problems.len() == before;
        }
        let (ct, c_null) = types(c);
        let (ht, h_null) = types(h);
        if !ct.is_empty() {
            let allows = |outer: &BTreeSet<String>, inner: &str| {
                outer.contains(inner) || (inner == "integer" && outer.contains("number"))
            };
            match dir {
                Dir::Response if ht.is_empty() => self.problems.push(format!(
                    "{at}: the contract says {ct:?}, Herald documents any type"
                )),
                Dir::Response => {
                    for t in &ht {
                        if !allows(&ct, t) {
                            self.problems.push(format!(
                                "{at}: Herald may send {t}, the contract allows {ct:?}"
                            ));
                        }
                    }
                }
                Dir::Request => {
                    for t in &ct {
                        if !ht.is_empty() && !allows(&ht, t) {
                            self.problems.push(format!(
                                "{at}: the contract lets clients send {t}, Herald accepts {ht:?}"
                            ));
                        }
                    }
                }
            }
        }
        match dir {
            Dir::Response if h_null && !c_null => self.problems.push(format!(
                "{at}: Herald may send null, the contract does not allow it"
            )),
            Dir::Request if c_null && !h_null && !ht.is_empty() => self.problems.push(format!(
                "{at}: the contract allows null, Herald's document does not"
            )),
            _ => {}
        }
        if let (Some(ce), Some(he)) = (c["enum"].as_array(), h["enum"].as_array()) {
            let (from, to, what) = match dir {
                Dir::Response => (he, ce, "Herald may send"),
                Dir::Request => (ce, he, "the contract allows"),
            };
            for v in from {
                if !to.contains(v) {
                    self.problems
                        .push(format!("{at}: {what} {v}, the other side does not"));
                }
            }
        }
        if let Some(items) = c.get("items") {
            let h_items = h.get("items").unwrap_or(&Value::Null);
            if h_items.is_null() && dir == Dir::Response {
                self.problems.push(format!(
                    "{at}: the contract describes the items, Herald does not"
                ));
            } else if !h_items.is_null() {
                self.schema(&format!("{at}[]"), items, h_items, dir, depth + 1);
            }
        }
        if let Some(cp) = c["properties"].as_object() {
            let hp = h["properties"].as_object();
            for (name, cs) in cp {
                match hp.and_then(|hp| hp.get(name)) {
                    Some(hs) => {
                        self.schema(&format!("{at}.{name}"), cs, hs, dir, depth + 1);
                    }
                    None if dir == Dir::Response
                        && !required(c).contains(name)
                        && NEVER_SENT.iter().any(|(n, _)| n == name) => {}
                    None => self.problems.push(format!(
                        "{at}.{name}: in the contract, not in Herald's document"
                    )),
                }
            }
            let (cr, hr) = (required(c), required(h));
            match dir {
                Dir::Response => {
                    for r in cr.difference(&hr) {
                        let full = format!("{at}.{r}");
                        if REQUIRED_SOMETIMES
                            .iter()
                            .any(|(kind, field, _)| full.ends_with(&format!("({kind}).{field}")))
                        {
                            continue;
                        }
                        self.problems.push(format!(
                            "{at}.{r}: the contract requires it in answers, Herald's document does not"
                        ));
                    }
                }
                Dir::Request => {
                    for r in hr.difference(&cr) {
                        self.problems.push(format!(
                            "{at}.{r}: Herald requires it, the contract does not"
                        ));
                    }
                }
            }
        }
        if let (Some(ca), Some(ha)) = (
            c.get("additionalProperties").filter(|v| v.is_object()),
            h.get("additionalProperties").filter(|v| v.is_object()),
        ) {
            self.schema(&format!("{at}.*"), ca, ha, dir, depth + 1);
        }
        self.problems.len() == before
    }

    /// `one` must be compatible with at least one of `many` (paired by destination type when
    /// the variants are fixed to one). `herald_is_one`: whether `one` is Herald's side.
    fn variant(
        &mut self,
        at: &str,
        many: &[Value],
        one: &Value,
        dir: Dir,
        depth: usize,
        herald_is_one: bool,
    ) {
        let (one_doc, many_doc) = if herald_is_one {
            (self.herald, self.contract)
        } else {
            (self.contract, self.herald)
        };
        let kind = fixed_type(one_doc, one);
        if let Some(k) = &kind {
            let paired: Vec<&Value> = many
                .iter()
                .filter(|m| fixed_type(many_doc, m).as_deref() == Some(k))
                .collect();
            if paired.is_empty() {
                let herald_only = herald_is_one;
                if !herald_only && TYPES_NOT_BUILT.contains(&k.as_str()) {
                    return; // Listed above: a type this build does not have.
                }
                if herald_only {
                    return; // A Herald type the contract does not know: an extension.
                }
                self.problems.push(format!(
                    "{at}: Herald has no variant for destination type {k:?}"
                ));
                return;
            }
            for m in paired {
                let (c, h) = if herald_is_one { (m, one) } else { (one, m) };
                self.schema(&format!("{at}({k})"), c, h, dir, depth + 1);
            }
            return;
        }
        let mut best: Option<Vec<String>> = None;
        for m in many {
            let (c, h) = if herald_is_one { (m, one) } else { (one, m) };
            let mut probe = Check {
                contract: self.contract,
                herald: self.herald,
                problems: Vec::new(),
            };
            if probe.schema(at, c, h, dir, depth + 1) {
                return;
            }
            if best.as_ref().is_none_or(|b| probe.problems.len() < b.len()) {
                best = Some(probe.problems);
            }
        }
        self.problems
            .push(format!("{at}: matches no variant of the other side"));
        self.problems.extend(best.unwrap_or_default());
    }
}

fn json_schema(op: &Value, status: Option<&str>) -> Option<Value> {
    let content = match status {
        None => &op["requestBody"]["content"],
        Some(code) => &op["responses"][code]["content"],
    };
    content.get("application/json").map(|c| c["schema"].clone())
}

/// A contract response may be a `$ref` to `components/responses`.
fn contract_op(contract: &Value, op: &Value) -> Value {
    let mut op = op.clone();
    if let Some(rs) = op["responses"].as_object_mut() {
        for r in rs.values_mut() {
            let resolved = resolve(contract, r).clone();
            *r = resolved;
        }
    }
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_covers_the_outpost_contract_with_compatible_schemas() {
    let h = Herald::start(&[]).await;
    let (status, herald) = h.call("GET", "/openapi.json", None).await;
    assert_eq!(status, 200, "{herald}");
    assert_eq!(herald["openapi"], "3.1.0");
    let contract = contract();
    let mut check = Check {
        contract: &contract,
        herald: &herald,
        problems: Vec::new(),
    };
    let mut covered = BTreeSet::new();
    for (path, item) in contract["paths"].as_object().expect("contract paths") {
        for method in METHODS {
            let Some(c_op) = item.get(method) else {
                continue;
            };
            if NOT_SERVED.contains(&(method, path.as_str())) {
                continue;
            }
            let c_op = contract_op(&contract, c_op);
            let h_path = format!("/api/v1{path}");
            let at = format!("{} {path}", method.to_uppercase());
            let Some(h_op) = herald["paths"].get(&h_path).and_then(|i| i.get(method)) else {
                check
                    .problems
                    .push(format!("{at}: not in Herald's document"));
                continue;
            };
            covered.insert((method.to_string(), h_path.clone()));
            if h_op.get("x-herald-extension").is_some() {
                check
                    .problems
                    .push(format!("{at}: a contract operation marked as an extension"));
            }
            if let Some(c_body) = json_schema(&c_op, None) {
                match json_schema(h_op, None) {
                    Some(h_body) => {
                        check.schema(&format!("{at} request"), &c_body, &h_body, Dir::Request, 0);
                    }
                    None => check.problems.push(format!(
                        "{at}: the contract has a JSON body, Herald's document none"
                    )),
                }
            }
            for (code, _) in c_op["responses"].as_object().expect("responses") {
                let documented = h_op["responses"].get(code).is_some();
                if code.starts_with('2') && !documented {
                    check.problems.push(format!(
                        "{at}: the contract's {code} is not in Herald's document"
                    ));
                    continue;
                }
                if !documented {
                    continue;
                }
                if let (Some(cs), Some(hs)) = (
                    json_schema(&c_op, Some(code)),
                    json_schema(h_op, Some(code)),
                ) {
                    check.schema(&format!("{at} {code}"), &cs, &hs, Dir::Response, 0);
                }
            }
        }
    }
    // Everything else Herald documents is an extension, and says so.
    for (path, item) in herald["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method)
                && !covered.contains(&(method.to_string(), path.clone()))
                && op["x-herald-extension"] != json!(true)
            {
                check.problems.push(format!(
                    "{} {path}: not in the contract and not marked x-herald-extension",
                    method.to_uppercase()
                ));
            }
        }
    }
    assert!(
        check.problems.is_empty(),
        "Herald's OpenAPI document is not compatible with the Outpost contract:\n{}",
        check.problems.join("\n")
    );
    assert!(
        covered.len() >= 26,
        "only {} contract operations",
        covered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_is_served_where_the_document_says() {
    let h = Herald::start(&[]).await;
    let (_, doc) = h.call("GET", "/openapi.json", None).await;
    let op = &doc["paths"]["/metrics"]["get"];
    assert_eq!(op["x-herald-extension"], true);
    assert!(
        op["responses"]["200"]["content"]["text/plain"].is_object(),
        "{op}"
    );
    let metrics = h.url("").replace("/api/v1", "/metrics");
    let resp = reqwest::Client::new()
        .get(&metrics)
        .bearer_auth(herald_testkit::API_KEY)
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    let no_key = reqwest::get(&metrics).await.expect("metrics");
    assert_eq!(no_key.status(), 401);
}
