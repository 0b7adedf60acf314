//! The portal's read-only pages: the destinations list, a destination's overview, the topic
//! catalog, events with their deliveries, and one attempt.
//!
//! Each page reads what it shows from the API as the session's tenant and renders the API's
//! JSON; a 404 (the resource does not exist, or belongs to another tenant) becomes the
//! portal's not-found page, a 401 (the tenant was deleted) the expired-session page.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use super::html::{self, Alert, E, Html, Shell, Tab, badge, csrf, s, time};
use super::session::{self, Expiry, Session};
use super::{Api, ApiFailure, PortalState, enc};

/// Query parameters of a page, decoded.
pub(crate) struct Q(Vec<(String, String)>);

impl Q {
    pub fn parse(raw: Option<&str>) -> Self {
        Q(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first non-empty value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == k && !v.trim().is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// The message a `?notice=` code stands for (codes only, so no text can be injected).
pub(crate) fn notice(q: &Q) -> Option<Alert> {
    let text = match q.get("notice")? {
        "created" => "Destination created.",
        "saved" => "Settings saved.",
        "enabled" => "Destination enabled.",
        "disabled" => "Destination disabled. It receives no events until you enable it again.",
        "rotated" => {
            "Signing secret rotated. The previous secret keeps signing until the time shown."
        }
        "test" => "Test event sent. Its delivery appears below within a few seconds.",
        "retried" => "Retry queued. The new attempt appears within a few seconds.",
        "deleted" => "Destination deleted.",
        _ => return None,
    };
    Some(Alert::Ok(text.to_string()))
}

/// The page for a failed API call: expired session, not found, or the API's message.
pub(crate) fn failure(portal: &PortalState, session: &Session, f: &ApiFailure) -> Response {
    match f.status {
        StatusCode::UNAUTHORIZED => session::expired(portal, Expiry::Session),
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => not_found_page(portal, session),
        s if s.is_server_error() => html::error_page(&portal.app.config.portal, &f.message),
        _ => {
            let shell = Shell {
                config: &portal.app.config.portal,
                session,
                alert: Some(Alert::Err(f.message.clone())),
            };
            Html(
                f.status,
                html::page(&shell, "Request failed", Tab::Destinations, ""),
            )
            .into_response()
        }
    }
}

fn not_found_page(portal: &PortalState, session: &Session) -> Response {
    let shell = Shell {
        config: &portal.app.config.portal,
        session,
        alert: None,
    };
    let body = "<h1>Not found</h1><p>This page does not exist, or it belongs to an account \
                you cannot see from this session.</p>\
                <p><a href=\"/portal/destinations\">Back to destinations</a></p>";
    Html(
        StatusCode::NOT_FOUND,
        html::page(&shell, "Not found", Tab::Destinations, body),
    )
    .into_response()
}

/// Fallback for unknown portal URLs.
pub async fn not_found(
    State(portal): State<PortalState>,
    headers: axum::http::HeaderMap,
) -> Response {
    match session::current(&portal, &headers) {
        Some(s) => not_found_page(&portal, &s),
        None => session::expired(&portal, Expiry::Session),
    }
}

/// Destinations per page of the destinations list.
const PER_PAGE: usize = 25;

/// Destination types by name, from `/destination-types`.
pub(crate) async fn types(api: &Api) -> Result<BTreeMap<String, Value>, ApiFailure> {
    let list = api.get("/destination-types").await?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (s(t, "type").to_string(), t.clone()))
        .collect())
}

/// The icon of a type as an `<img>` (the SVG travels as a data URL, never as markup).
pub(crate) fn icon(t: Option<&Value>) -> String {
    match t
        .map(|t| s(t, "icon"))
        .filter(|i| i.trim_start().starts_with("<svg"))
    {
        Some(svg) => format!(
            "<img class=\"icon\" src=\"data:image/svg+xml;base64,{}\" alt=\"\" width=\"20\" height=\"20\">",
            base64::engine::general_purpose::STANDARD.encode(svg)
        ),
        None => String::new(),
    }
}

fn label<'a>(types: &'a BTreeMap<String, Value>, kind: &'a str) -> &'a str {
    types
        .get(kind)
        .map(|t| s(t, "label"))
        .filter(|l| !l.is_empty())
        .unwrap_or(kind)
}

/// Enabled / disabled badge of a destination; `auto` is the reason it was disabled
/// automatically, when it was.
pub(crate) fn status_badge(d: &Value, auto: Option<&str>) -> String {
    if d.get("expired").and_then(Value::as_bool) == Some(true) {
        return format!(
            "{} <span class=\"hint\">{}</span>",
            badge("err", "Expired"),
            E("its subscription ended; it receives nothing until it is renewed")
        );
    }
    match (d.get("disabled_at").and_then(Value::as_str), auto) {
        (None, _) => badge("ok", "Enabled"),
        (Some(_), None) => badge("warn", "Disabled"),
        (Some(_), Some(why)) => format!(
            "{} <span class=\"hint\">{}</span>",
            badge("err", "Auto-disabled"),
            E(why)
        ),
    }
}

/// Why a disabled destination was disabled by Herald, if it was.
///
/// The store keeps when a destination was disabled, not who disabled it. Herald disables a
/// destination right after recording the failed attempt that triggered it (a 410 Gone, or
/// the consecutive-failure threshold), so a destination whose latest attempt failed and
/// finished just before it was disabled was disabled automatically.
pub(crate) async fn auto_disabled(api: &Api, tenant: &str, d: &Value) -> Option<String> {
    let disabled_at = d["disabled_at"].as_str()?.parse::<jiff::Timestamp>().ok()?;
    let path = format!(
        "/tenants/{}/destinations/{}/attempts?limit=1",
        enc(tenant),
        enc(s(d, "id"))
    );
    let attempts = api.get(&path).await.ok()?;
    let last = attempts["models"].as_array()?.first()?.clone();
    if s(&last, "status") != "failed" {
        return None;
    }
    let started = s(&last, "time").parse::<jiff::Timestamp>().ok()?;
    let finished =
        started + jiff::SignedDuration::from_millis(last["latency_ms"].as_i64().unwrap_or(0));
    let gap = disabled_at.duration_since(finished);
    if gap < jiff::SignedDuration::from_secs(-1) || gap > jiff::SignedDuration::from_secs(5) {
        return None;
    }
    Some(if s(&last, "code") == "410" {
        "the endpoint answered 410 Gone".to_string()
    } else {
        format!(
            "after repeated failed attempts (last: {})",
            s(&last, "code")
        )
    })
}

fn shell<'a>(portal: &'a PortalState, session: &'a Session, alert: Option<Alert>) -> Shell<'a> {
    Shell {
        config: &portal.app.config.portal,
        session,
        alert,
    }
}

/// `GET /portal/destinations`.
pub async fn destinations(
    State(portal): State<PortalState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Q::parse(raw.as_deref());
    let api = session.api(&portal);
    let t = enc(&session.tenant);
    let mut path = format!("/tenants/{t}/destinations?");
    if let Some(k) = q.get("type") {
        let _ = write!(path, "type={}&", enc(k));
    }
    if let Some(k) = q.get("topic") {
        let _ = write!(path, "topics={}&", enc(k));
    }
    let (list, types, catalog) =
        match tokio_join3(api.get(&path), types(&api), api.get("/topics")).await {
            Ok(v) => v,
            Err(f) => return failure(&portal, &session, &f),
        };
    let all = list.as_array().cloned().unwrap_or_default();
    let filtered = q.get("type").is_some() || q.get("topic").is_some();
    // The API lists a tenant's destinations whole; the portal shows them a page at a time.
    let pages = all.len().div_ceil(PER_PAGE).max(1);
    let current = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let list: Vec<Value> = all
        .iter()
        .skip((current - 1) * PER_PAGE)
        .take(PER_PAGE)
        .cloned()
        .collect();
    let mut auto: BTreeMap<String, String> = BTreeMap::new();
    for d in list.iter().filter(|d| !d["disabled_at"].is_null()) {
        if let Some(why) = auto_disabled(&api, &session.tenant, d).await {
            auto.insert(s(d, "id").to_string(), why);
        }
    }
    let mut b = String::new();
    b.push_str(
        "<div class=\"head\"><h1>Destinations</h1><div class=\"actions\">\
         <a class=\"btn primary\" href=\"/portal/destinations/new\">Add destination</a></div></div>",
    );
    if all.is_empty() && !filtered {
        b.push_str(
            "<div class=\"empty\"><h2>No destinations yet</h2>\
             <p>A destination is where your events are delivered: an HTTP endpoint of yours, \
             or a queue. Add one, choose the topics it subscribes to, then send it a test event.</p>\
             <p><a class=\"btn primary\" href=\"/portal/destinations/new\">Add your first destination</a></p>\
             <p class=\"hint\">See the <a href=\"/portal/topics\">topic catalog</a> for the events you can subscribe to.</p></div>",
        );
        return page(
            &portal,
            &session,
            notice(&q),
            "Destinations",
            Tab::Destinations,
            &b,
        );
    }
    // Filters.
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/portal/destinations\" role=\"search\" aria-label=\"Filter destinations\">");
    b.push_str("<label>Type<select name=\"type\"><option value=\"\">All types</option>");
    for (k, t) in &types {
        let sel = if q.get("type") == Some(k.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            b,
            "<option value=\"{}\"{sel}>{}</option>",
            E(k),
            E(s(t, "label"))
        );
    }
    b.push_str("</select></label><label>Topic<select name=\"topic\"><option value=\"\">All topics</option>");
    for name in catalog
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let sel = if q.get("topic") == Some(name) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{}</option>", E(name));
    }
    b.push_str("</select></label><button class=\"btn\" type=\"submit\">Filter</button>");
    if filtered {
        b.push_str("<a class=\"btn ghost\" href=\"/portal/destinations\">Clear</a>");
    }
    b.push_str("</form>");
    if list.is_empty() {
        b.push_str("<div class=\"empty\"><p>No destination matches these filters.</p></div>");
    } else {
        b.push_str(
            "<div class=\"table-wrap\"><table class=\"stack\"><caption class=\"sr-only\">Destinations</caption>\
             <thead><tr><th scope=\"col\">Type</th><th scope=\"col\">Target</th><th scope=\"col\">Topics</th>\
             <th scope=\"col\">Status</th><th scope=\"col\">Created</th><th scope=\"col\"><span class=\"sr-only\">Test</span></th></tr></thead><tbody>",
        );
        for d in &list {
            let id = s(d, "id");
            let kind = s(d, "type");
            let target = match s(d, "target") {
                "" => id,
                t => t,
            };
            let _ = write!(
                b,
                "<tr><td data-label=\"Type\">{icon} {label}</td>\
                 <td data-label=\"Target\" class=\"mono\"><a href=\"/portal/destinations/{href}\">{target}</a></td>\
                 <td data-label=\"Topics\">{topics}</td><td data-label=\"Status\">{status}</td>\
                 <td data-label=\"Created\">{created}</td><td>{test}</td></tr>",
                test = if d["disabled_at"].is_null() {
                    format!(
                        "<form method=\"post\" action=\"/portal/destinations/{}/test\">{}\
                         <button type=\"submit\" class=\"btn small\">Send test<span class=\"sr-only\"> event to {}</span></button></form>",
                        enc(id),
                        csrf(&session),
                        E(target)
                    )
                } else {
                    String::new()
                },
                icon = icon(types.get(kind)),
                label = E(label(&types, kind)),
                href = enc(id),
                target = E(target),
                topics = E(&html::topics_text(&d["topics"])),
                status = status_badge(d, auto.get(id).map(String::as_str)),
                created = time(&d["created_at"]),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    if pages > 1 {
        let mut base = String::from("/portal/destinations?");
        for k in ["type", "topic"] {
            if let Some(v) = q.get(k) {
                let _ = write!(base, "{k}={}&", enc(v));
            }
        }
        let _ = write!(
            b,
            "<nav class=\"pager\" aria-label=\"Pages\"><span>Page {current} of {pages}</span>"
        );
        if current > 1 {
            let _ = write!(
                b,
                "<a class=\"btn\" href=\"{}page={}\">Previous</a>",
                E(&base),
                current - 1
            );
        }
        if current < pages {
            let _ = write!(
                b,
                "<a class=\"btn\" href=\"{}page={}\">Next</a>",
                E(&base),
                current + 1
            );
        }
        b.push_str("</nav>");
    }
    page(
        &portal,
        &session,
        notice(&q),
        "Destinations",
        Tab::Destinations,
        &b,
    )
}

/// Three API calls at once.
async fn tokio_join3<A, B, C>(
    a: impl Future<Output = Result<A, ApiFailure>>,
    b: impl Future<Output = Result<B, ApiFailure>>,
    c: impl Future<Output = Result<C, ApiFailure>>,
) -> Result<(A, B, C), ApiFailure> {
    let (a, b, c) = tokio::join!(a, b, c);
    Ok((a?, b?, c?))
}

pub(crate) fn page(
    portal: &PortalState,
    session: &Session,
    alert: Option<Alert>,
    title: &str,
    tab: Tab,
    body: &str,
) -> Response {
    let shell = shell(portal, session, alert);
    Html(StatusCode::OK, html::page(&shell, title, tab, body)).into_response()
}

/// `GET /portal/destinations/{id}`.
pub async fn destination(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Q::parse(raw.as_deref());
    let mut alert = notice(&q);
    if let (Some(Alert::Ok(m)), Some(ev)) = (&mut alert, q.get("event")) {
        let _ = write!(m, " Event id: {ev}.");
    }
    destination_page(&portal, &session, &id, alert, StatusCode::OK).await
}

/// The credential keys of a type that hold signing secrets, managed by rotation rather than
/// edited: the one its schema names (`signing_secret_key`) and the rotation fields.
pub(crate) fn signing_keys(spec: &Value) -> Vec<&str> {
    match spec.get("signing_secret_key").and_then(Value::as_str) {
        Some(key) => vec![key, "previous_secret", "previous_secret_invalid_at"],
        None => Vec::new(),
    }
}

/// Whether a destination's target is an HTTP URL (its attempts are POST requests).
fn is_http(target: &str) -> bool {
    target.starts_with("https://") || target.starts_with("http://")
}

/// The destination overview, with an optional message (used after actions too).
pub(crate) async fn destination_page(
    portal: &PortalState,
    session: &Session,
    id: &str,
    alert: Option<Alert>,
    status: StatusCode,
) -> Response {
    let api = session.api(portal);
    let base = format!("/tenants/{}/destinations/{}", enc(&session.tenant), enc(id));
    let now = portal.app.engine.clock().now();
    let hour = now.as_second() / 3600 * 3600;
    let start = jiff::Timestamp::from_second(hour - 23 * 3600).unwrap_or(now);
    let end = jiff::Timestamp::from_second(hour + 3600).unwrap_or(now);
    let metrics_path = format!(
        "/metrics/attempts?time[start]={}&time[end]={}&granularity=1h&measures=successful_count,failed_count&filters[destination_id]={}",
        enc(&start.to_string()),
        enc(&end.to_string()),
        enc(id)
    );
    let d = match api.get(&base).await {
        Ok(d) => d,
        Err(f) => return failure(portal, session, &f),
    };
    let (attempts, types, metrics) = match tokio_join3(
        api.get(&format!("{base}/attempts?limit=10")),
        types(&api),
        api.get(&metrics_path),
    )
    .await
    {
        Ok(v) => v,
        Err(f) => return failure(portal, session, &f),
    };
    let catalog = api.get("/topics/catalog").await.unwrap_or(Value::Null);
    let auto = auto_disabled(&api, &session.tenant, &d).await;
    let kind = s(&d, "type");
    let enabled = d["disabled_at"].is_null();
    let mut b = String::new();
    let target = match s(&d, "target") {
        "" => id,
        t => t,
    };
    let _ = write!(
        b,
        "<p class=\"hint\"><a href=\"/portal/destinations\">Destinations</a> / {label}</p>\
         <div class=\"head\"><h1 class=\"mono\">{icon} {target}</h1><div class=\"actions\">",
        label = E(label(&types, kind)),
        icon = icon(types.get(kind)),
        target = E(target),
    );
    let path = format!("/portal/destinations/{}", enc(id));
    // Test event: the topic can be chosen among the subscribed ones that have a sample.
    let sample_topics: Vec<&str> = catalog
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["sample"].is_object())
        .map(|t| s(t, "name"))
        .filter(|name| topic_subscribed(&d["topics"], name))
        .collect();
    if enabled {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"{path}/test\" class=\"actions\">{}",
            csrf(session)
        );
        if sample_topics.len() > 1 {
            b.push_str("<label class=\"sr-only\" for=\"test-topic\">Topic of the test event</label><select id=\"test-topic\" name=\"topic\">");
            for t in &sample_topics {
                let _ = write!(b, "<option>{}</option>", E(t));
            }
            b.push_str("</select>");
        }
        b.push_str("<button type=\"submit\" class=\"btn primary\">Send test event</button></form>");
    }
    let (action, text) = if enabled {
        ("disable", "Disable")
    } else {
        ("enable", "Enable")
    };
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{path}/{action}\">{}<button type=\"submit\" class=\"btn\">{text}</button></form>\
         <a class=\"btn\" href=\"{path}/settings\">Edit settings</a>\
         <a class=\"btn ghost\" href=\"{path}/delete\">Delete</a></div></div>",
        csrf(session)
    );
    // Overview.
    let mut ok_total = 0u64;
    let mut err_total = 0u64;
    let mut buckets = [(0u64, 0u64); 24];
    for p in metrics["data"].as_array().into_iter().flatten() {
        let okc = p["metrics"]["successful_count"].as_u64().unwrap_or(0);
        let errc = p["metrics"]["failed_count"].as_u64().unwrap_or(0);
        ok_total += okc;
        err_total += errc;
        if let Some(t) = p["time_bucket"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            let i = (t.as_second() - start.as_second()) / 3600;
            if let Ok(i) = usize::try_from(i)
                && i < 24
            {
                buckets[i].0 += okc;
                buckets[i].1 += errc;
            }
        }
    }
    let total = ok_total + err_total;
    let rate = if total == 0 {
        "—".to_string()
    } else {
        format!("{:.1} %", ok_total as f64 * 100.0 / total as f64)
    };
    let _ = write!(
        b,
        "<h2>Last 24 hours</h2><div class=\"cards\">\
         <div class=\"card\"><span class=\"n\">{rate}</span><span class=\"l\">Success rate</span></div>\
         <div class=\"card\"><span class=\"n\">{total}</span><span class=\"l\">Attempts</span></div>\
         <div class=\"card\"><span class=\"n\">{err_total}</span><span class=\"l\">Failed attempts</span></div>\
         <div class=\"card\"><span class=\"n\">{status}</span><span class=\"l\">Status</span></div></div>",
        status = status_badge(&d, auto.as_deref()),
    );
    b.push_str(&chart(&buckets, start.as_second()));
    // Details.
    b.push_str("<h2>Details</h2><dl class=\"kv\">");
    let _ = write!(
        b,
        "<dt>Id</dt><dd class=\"mono\">{}</dd><dt>Type</dt><dd>{}</dd><dt>Topics</dt><dd>{}</dd>",
        E(id),
        E(label(&types, kind)),
        E(&html::topics_text(&d["topics"]))
    );
    if let Some(url) = d["target_url"].as_str() {
        let _ = write!(b, "<dt>Target URL</dt><dd class=\"mono\">{}</dd>", E(url));
    }
    let _ = write!(
        b,
        "<dt>Filter</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd>",
        if d["filter"].is_object() {
            format!(
                "<code class=\"mono\">{}</code>",
                E(&d["filter"].to_string())
            )
        } else {
            "None: every event of the subscribed topics".to_string()
        },
        time(&d["created_at"])
    );
    if !enabled {
        let _ = write!(
            b,
            "<dt>Disabled</dt><dd>{} — no events are delivered until it is enabled again</dd>",
            time(&d["disabled_at"])
        );
        if let Some(why) = &auto {
            let _ = write!(
                b,
                "<dt>Reason</dt><dd>Disabled automatically by Herald: {}. Fix the endpoint, then enable it again.</dd>",
                E(why)
            );
        }
    }
    b.push_str("</dl>");
    // Signing secret.
    let creds = &d["credentials"];
    let signing_key = types
        .get(kind)
        .and_then(|t| t["signing_secret_key"].as_str());
    if let Some(current) = signing_key
        .and_then(|k| creds.get(k))
        .and_then(Value::as_str)
    {
        let prev_key = "previous_secret";
        let _ = write!(
            b,
            "<h2>Signing secret</h2><p class=\"hint\">Use it to verify the signature of every request Herald sends.</p>\
             <div class=\"secret\"><span>Current:</span><code id=\"secret-current\">{}</code>\
             <button type=\"button\" class=\"btn small\" data-copy=\"secret-current\" hidden>Copy</button></div>",
            E(current)
        );
        if let Some(prev) = creds.get(prev_key).and_then(Value::as_str) {
            let until = creds
                .get(format!("{prev_key}_invalid_at"))
                .cloned()
                .unwrap_or(Value::Null);
            let still = until
                .as_str()
                .and_then(|u| u.parse::<jiff::Timestamp>().ok())
                .is_none_or(|u| u > now);
            if still {
                let _ = write!(
                    b,
                    "<div class=\"secret\"><span>Previous:</span><code id=\"secret-previous\">{}</code>\
                     <span class=\"hint\">also signs until {}</span></div>",
                    E(prev),
                    time(&until)
                );
            }
        }
        let _ = write!(
            b,
            "<form method=\"post\" action=\"{path}/rotate\" class=\"actions\" style=\"margin-top:.5rem\">{}\
             <button type=\"submit\" class=\"btn\">Rotate secret</button>\
             <span class=\"hint\">The current secret keeps signing for 24 hours next to the new one.</span></form>",
            csrf(session)
        );
    }
    // Latest attempts.
    b.push_str("<h2>Latest attempts</h2>");
    let rows = attempts["models"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        b.push_str("<p class=\"hint\">No attempts yet. Send a test event to see one here.</p>");
    } else {
        attempts_table(&mut b, &rows, false);
        let _ = write!(
            b,
            "<p><a href=\"/portal/events?destination={}\">All events of this destination</a></p>",
            enc(id)
        );
    }
    let shell = shell(portal, session, alert);
    Html(status, html::page(&shell, target, Tab::Destinations, &b)).into_response()
}

/// Whether a destination's wire `topics` subscribes to `name`.
fn topic_subscribed(topics: &Value, name: &str) -> bool {
    match topics {
        Value::String(s) => s == "*",
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|p| p == "*" || p == name || herald_core::topic::pattern_matches(p, name)),
        _ => false,
    }
}

/// Attempts over 24 hourly buckets as an inline SVG bar chart, with a text summary.
fn chart(buckets: &[(u64, u64); 24], start: i64) -> String {
    let max = buckets.iter().map(|(a, b)| a + b).max().unwrap_or(0).max(1);
    let (w, h, top, bottom) = (960.0_f64, 170.0_f64, 10.0_f64, 24.0_f64);
    let plot = h - top - bottom;
    let bw = w / 24.0;
    let total: u64 = buckets.iter().map(|(a, b)| a + b).sum();
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-title\">\
         <title id=\"chart-title\">Attempts per hour over the last 24 hours: {total} in all, at most {max} in one hour</title>\
         <line x1=\"0\" y1=\"{y}\" x2=\"{w}\" y2=\"{y}\"></line>",
        y = top + plot
    );
    for (i, (okc, errc)) in buckets.iter().enumerate() {
        let x = i as f64 * bw + 2.0;
        let ok_h = *okc as f64 / max as f64 * plot;
        let err_h = *errc as f64 / max as f64 * plot;
        let hour = jiff::Timestamp::from_second(start + i as i64 * 3600)
            .map(|t| t.strftime("%H:00").to_string())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<g><title>{hour} UTC: {okc} succeeded, {errc} failed</title>\
             <rect class=\"ok\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{ok_h:.1}\"></rect>\
             <rect class=\"err\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{err_h:.1}\"></rect></g>",
            top + plot - ok_h,
            bw - 4.0,
            top + plot - ok_h - err_h,
            bw - 4.0,
        );
        if i % 4 == 0 {
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\">{hour}</text>",
                h - 8.0
            );
        }
    }
    out.push_str(
        "</svg><div class=\"legend\" aria-hidden=\"true\"><span><span class=\"sw ok\"></span>Succeeded</span>\
         <span><span class=\"sw err\"></span>Failed</span></div>",
    );
    out
}

/// A table of attempts; `with_destination` adds the destination column.
fn attempts_table(b: &mut String, rows: &[Value], with_destination: bool) {
    b.push_str("<div class=\"table-wrap\"><table class=\"stack\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Status</th><th scope=\"col\">Code</th><th scope=\"col\">Topic</th>");
    if with_destination {
        b.push_str("<th scope=\"col\">Destination</th>");
    }
    b.push_str("<th scope=\"col\">Attempt</th><th scope=\"col\">Latency</th><th scope=\"col\"><span class=\"sr-only\">Details</span></th></tr></thead><tbody>");
    for a in rows {
        let _ = write!(
            b,
            "<tr><td data-label=\"Time\">{}</td><td data-label=\"Status\">{}</td><td data-label=\"Code\" class=\"mono\">{}</td><td data-label=\"Topic\">{}</td>",
            time(&a["time"]),
            attempt_badge(a),
            E(s(a, "code")),
            E(s(a, "topic")),
        );
        if with_destination {
            let _ = write!(
                b,
                "<td data-label=\"Destination\" class=\"mono\"><a href=\"/portal/destinations/{}\">{}</a></td>",
                enc(s(a, "destination_id")),
                E(s(a, "destination_id"))
            );
        }
        let _ = write!(
            b,
            "<td data-label=\"Attempt\">#{}{}</td><td data-label=\"Latency\">{} ms</td>\
             <td><a href=\"/portal/attempts/{}\">View attempt<span class=\"sr-only\"> {}</span></a></td></tr>",
            a["attempt_number"].as_u64().unwrap_or(0),
            if a["manual"].as_bool() == Some(true) {
                " (manual)"
            } else {
                ""
            },
            a["latency_ms"].as_u64().unwrap_or(0),
            enc(s(a, "id")),
            E(s(a, "id")),
        );
    }
    b.push_str("</tbody></table></div>");
}

fn attempt_badge(a: &Value) -> String {
    match s(a, "status") {
        "success" => badge("ok", "Succeeded"),
        _ => badge("err", "Failed"),
    }
}

/// `GET /portal/topics`.
pub async fn topics(
    State(portal): State<PortalState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Q::parse(raw.as_deref());
    let api = session.api(&portal);
    let catalog = match api.get("/topics/catalog").await {
        Ok(c) => c,
        Err(f) => return failure(&portal, &session, &f),
    };
    let needle = q.get("q").unwrap_or("").trim().to_lowercase();
    let all = catalog.as_array().cloned().unwrap_or_default();
    let shown: Vec<&Value> = all
        .iter()
        .filter(|t| needle.is_empty() || s(t, "name").to_lowercase().contains(&needle))
        .collect();
    let mut b = String::from("<h1>Topic catalog</h1>");
    if all.is_empty() {
        b.push_str("<div class=\"empty\"><p>No topic catalog is configured: destinations may subscribe to any topic, or to all topics with <code>*</code>.</p></div>");
        return page(&portal, &session, None, "Topic catalog", Tab::Topics, &b);
    }
    let _ = write!(
        b,
        "<p class=\"hint\">Every event topic you can subscribe to, with a sample payload. Test events use these samples.</p>\
         <form class=\"filters\" method=\"get\" action=\"/portal/topics\" role=\"search\" aria-label=\"Search topics\">\
         <label>Search by name<input type=\"search\" name=\"q\" value=\"{}\" data-topic-search></label>\
         <button class=\"btn\" type=\"submit\">Search</button>\
         <span data-topic-count aria-live=\"polite\">{} {}</span></form>",
        E(&needle),
        shown.len(),
        if shown.len() == 1 { "topic" } else { "topics" }
    );
    for t in &all {
        let name = s(t, "name");
        let hidden = if shown.iter().any(|x| s(x, "name") == name) {
            ""
        } else {
            " hidden"
        };
        let _ = write!(
            b,
            "<section class=\"topic\" data-topic=\"{n}\"{hidden} aria-label=\"{n}\"><h2>{n}</h2><p>{}</p>",
            E(s(t, "description")),
            n = E(name),
        );
        if t["sample"].is_object() {
            b.push_str("<details><summary>Sample payload</summary>");
            b.push_str(&html::json_block(
                &t["sample"],
                &format!("Sample payload of {name}"),
            ));
            b.push_str("</details>");
        } else {
            b.push_str("<p class=\"hint\">No sample payload.</p>");
        }
        b.push_str("</section>");
    }
    page(&portal, &session, None, "Topic catalog", Tab::Topics, &b)
}

/// `datetime-local` input (UTC) to RFC 3339; RFC 3339 passes through.
fn to_rfc3339(v: &str) -> Option<String> {
    if v.parse::<jiff::Timestamp>().is_ok() {
        return Some(v.to_string());
    }
    let dt: jiff::civil::DateTime = v.parse().ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().to_string())
}

/// `GET /portal/events`: events, or attempts when filtered by delivery status.
pub async fn events(
    State(portal): State<PortalState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Q::parse(raw.as_deref());
    let api = session.api(&portal);
    let t = enc(&session.tenant);
    let status = q
        .get("status")
        .filter(|s| matches!(*s, "success" | "failed"));
    let mut filter_qs = String::new();
    for k in ["topic", "destination", "status", "from", "to"] {
        if let Some(v) = q.get(k) {
            let _ = write!(filter_qs, "{k}={}&", enc(v));
        }
    }
    let mut api_qs = String::from("limit=25&");
    if let Some(v) = q.get("topic") {
        let _ = write!(api_qs, "topic={}&", enc(v));
    }
    if let Some(v) = q.get("destination") {
        let _ = write!(api_qs, "destination_id={}&", enc(v));
    }
    let mut bad_time = None;
    for (k, op) in [("from", "gte"), ("to", "lt")] {
        if let Some(v) = q.get(k) {
            match to_rfc3339(v) {
                Some(ts) => {
                    let _ = write!(api_qs, "time[{op}]={}&", enc(&ts));
                }
                None => bad_time = Some(k),
            }
        }
    }
    for k in ["next", "prev"] {
        if let Some(v) = q.get(k) {
            let _ = write!(api_qs, "{k}={}&", enc(v));
        }
    }
    let dests = match api.get(&format!("/tenants/{t}/destinations")).await {
        Ok(d) => d.as_array().cloned().unwrap_or_default(),
        Err(f) => return failure(&portal, &session, &f),
    };
    let catalog = api.get("/topics").await.unwrap_or(Value::Null);
    let mut b = String::from("<h1>Events and deliveries</h1>");
    // Filters.
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/portal/events\" role=\"search\" aria-label=\"Filter events\">");
    b.push_str("<label>Topic<select name=\"topic\"><option value=\"\">All topics</option>");
    for name in catalog
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let sel = if q.get("topic") == Some(name) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{}</option>", E(name));
    }
    b.push_str("</select></label><label>Delivery status<select name=\"status\"><option value=\"\">Any</option>");
    for (v, l) in [("success", "Succeeded"), ("failed", "Failed")] {
        let sel = if status == Some(v) { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{v}\"{sel}>{l}</option>");
    }
    b.push_str("</select></label><label>Destination<select name=\"destination\"><option value=\"\">All destinations</option>");
    for d in &dests {
        let id = s(d, "id");
        let sel = if q.get("destination") == Some(id) {
            " selected"
        } else {
            ""
        };
        let shown = match s(d, "target") {
            "" => id,
            t => t,
        };
        let _ = write!(b, "<option value=\"{}\"{sel}>{}</option>", E(id), E(shown));
    }
    let _ = write!(
        b,
        "</select></label><label>From (UTC)<input type=\"datetime-local\" name=\"from\" value=\"{}\"></label>\
         <label>To (UTC)<input type=\"datetime-local\" name=\"to\" value=\"{}\"></label>\
         <button class=\"btn\" type=\"submit\">Filter</button><a class=\"btn ghost\" href=\"/portal/events\">Clear</a></form>",
        E(q.get("from").unwrap_or("")),
        E(q.get("to").unwrap_or(""))
    );
    let alert = bad_time.map(|k| Alert::Err(format!("{k}: not a date and time")));
    let page_data = if let Some(st) = status {
        api.get(&format!("/attempts?{api_qs}status={st}")).await
    } else {
        api.get(&format!("/events?{api_qs}")).await
    };
    let data = match page_data {
        Ok(v) => v,
        Err(f) if f.status.is_client_error() && f.status != StatusCode::UNAUTHORIZED => {
            b.push_str(&html::alert(&Alert::Err(f.message)));
            return page(&portal, &session, alert, "Events", Tab::Events, &b);
        }
        Err(f) => return failure(&portal, &session, &f),
    };
    let rows = data["models"].as_array().cloned().unwrap_or_default();
    if status.is_some() {
        if rows.is_empty() {
            b.push_str(
                "<div class=\"empty\"><p>No delivery attempt matches these filters.</p></div>",
            );
        } else {
            attempts_table(&mut b, &rows, true);
        }
    } else if rows.is_empty() {
        b.push_str("<div class=\"empty\"><p>No event matches these filters. Events appear here as they are published; \
                    send a test event from a destination's page to see one.</p></div>");
    } else {
        // Delivery status of each event, from its attempts (one call for the page).
        let mut aq = String::from("/attempts?limit=1000&");
        for e in &rows {
            let _ = write!(aq, "event_id={}&", enc(s(e, "id")));
        }
        let attempts = api.get(&aq).await.unwrap_or(Value::Null);
        // Latest attempt per (event, destination): the list is newest first.
        let mut latest: HashMap<(String, String), bool> = HashMap::new();
        for a in attempts["models"].as_array().into_iter().flatten() {
            latest
                .entry((
                    s(a, "event_id").to_string(),
                    s(a, "destination_id").to_string(),
                ))
                .or_insert(s(a, "status") == "success");
        }
        b.push_str("<div class=\"table-wrap\"><table class=\"stack\"><caption class=\"sr-only\">Events</caption><thead><tr>\
                    <th scope=\"col\">Time</th><th scope=\"col\">Topic</th><th scope=\"col\">Event</th><th scope=\"col\">Delivery</th></tr></thead><tbody>");
        for e in &rows {
            let id = s(e, "id");
            let matched: Vec<&str> = e["matched_destination_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let ok = matched
                .iter()
                .filter(|d| latest.get(&(id.to_string(), d.to_string())) == Some(&true))
                .count();
            let failed = matched
                .iter()
                .filter(|d| latest.get(&(id.to_string(), d.to_string())) == Some(&false))
                .count();
            let delivery = if matched.is_empty() {
                badge("", "No destination")
            } else if failed > 0 {
                badge("err", &format!("Failed ({failed} of {})", matched.len()))
            } else if ok == matched.len() {
                badge("ok", "Delivered")
            } else {
                badge("warn", "Pending")
            };
            let test = if e["metadata"]["test"].as_str() == Some("true") {
                format!(" {}", badge("", "Test"))
            } else {
                String::new()
            };
            let _ = write!(
                b,
                "<tr><td data-label=\"Time\">{}</td><td data-label=\"Topic\">{}{test}</td>\
                 <td data-label=\"Event\" class=\"mono\"><a href=\"/portal/events/{}\">{}</a></td><td data-label=\"Delivery\">{delivery}</td></tr>",
                time(&e["time"]),
                E(s(e, "topic")),
                enc(id),
                E(id),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    // Pagination.
    let next = data["pagination"]["next"].as_str();
    let prev = data["pagination"]["prev"].as_str();
    if next.is_some() || prev.is_some() {
        b.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
        if let Some(p) = prev {
            let _ = write!(
                b,
                "<a class=\"btn\" href=\"/portal/events?{}prev={}\">Newer</a>",
                E(&filter_qs),
                enc(p)
            );
        }
        if let Some(n) = next {
            let _ = write!(
                b,
                "<a class=\"btn\" href=\"/portal/events?{}next={}\">Older</a>",
                E(&filter_qs),
                enc(n)
            );
        }
        b.push_str("</nav>");
    }
    page(&portal, &session, alert, "Events", Tab::Events, &b)
}

/// `GET /portal/events/{id}`.
pub async fn event(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Q::parse(raw.as_deref());
    event_page(&portal, &session, &id, notice(&q), StatusCode::OK).await
}

/// The event page, with an optional message (used after a retry too).
pub(crate) async fn event_page(
    portal: &PortalState,
    session: &Session,
    id: &str,
    alert: Option<Alert>,
    status: StatusCode,
) -> Response {
    let api = session.api(portal);
    let e = match api.get(&format!("/events/{}", enc(id))).await {
        Ok(e) => e,
        Err(f) => return failure(portal, session, &f),
    };
    let attempts = match api
        .get(&format!("/attempts?limit=1000&event_id={}", enc(id)))
        .await
    {
        Ok(a) => a["models"].as_array().cloned().unwrap_or_default(),
        Err(f) => return failure(portal, session, &f),
    };
    let mut b = format!(
        "<p class=\"hint\"><a href=\"/portal/events\">Events</a> / event</p><h1 class=\"mono\">{}</h1>",
        E(id)
    );
    let test = e["metadata"]["test"].as_str() == Some("true");
    let _ = write!(
        b,
        "<dl class=\"kv\"><dt>Topic</dt><dd>{}{}</dd><dt>Time</dt><dd>{}</dd></dl><h2>Payload</h2>{}",
        E(s(&e, "topic")),
        if test {
            format!(" {}", badge("", "Test event"))
        } else {
            String::new()
        },
        time(&e["time"]),
        html::json_block(&e["data"], "Event payload"),
    );
    if e["metadata"].as_object().is_some_and(|m| !m.is_empty()) {
        b.push_str("<h3>Metadata</h3>");
        b.push_str(&html::json_block(&e["metadata"], "Event metadata"));
    }
    b.push_str("<h2>Deliveries</h2>");
    let mut per: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for d in e["matched_destination_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        per.entry(d.to_string()).or_default();
    }
    for a in attempts {
        per.entry(s(&a, "destination_id").to_string())
            .or_default()
            .push(a);
    }
    if per.is_empty() {
        b.push_str("<p class=\"hint\">No destination matched this event.</p>");
    }
    for (dest, rows) in &per {
        let _ = write!(
            b,
            "<section aria-label=\"Deliveries to {d}\"><div class=\"head\"><h3>To <a class=\"mono\" href=\"/portal/destinations/{href}\">{d}</a></h3>\
             <form method=\"post\" action=\"/portal/retry\">{csrf}<input type=\"hidden\" name=\"event_id\" value=\"{e}\">\
             <input type=\"hidden\" name=\"destination_id\" value=\"{d}\"><input type=\"hidden\" name=\"back\" value=\"event\">\
             <button type=\"submit\" class=\"btn small\">Retry<span class=\"sr-only\"> delivery to {d}</span></button></form></div>",
            d = E(dest),
            href = enc(dest),
            e = E(id),
            csrf = csrf(session),
        );
        if rows.is_empty() {
            b.push_str("<p class=\"hint\">No attempt yet: the delivery is pending.</p>");
        } else {
            attempts_table(&mut b, rows, false);
        }
        b.push_str("</section>");
    }
    let shell = shell(portal, session, alert);
    Html(status, html::page(&shell, "Event", Tab::Events, &b)).into_response()
}

/// `GET /portal/attempts/{id}`.
pub async fn attempt(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = Q::parse(raw.as_deref());
    attempt_page(&portal, &session, &id, notice(&q), StatusCode::OK).await
}

/// Headers whose values are secret and shown masked.
fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("signature") || n == "authorization" || n.contains("api-key") || n.contains("token")
}

/// The attempt page.
pub(crate) async fn attempt_page(
    portal: &PortalState,
    session: &Session,
    id: &str,
    alert: Option<Alert>,
    status: StatusCode,
) -> Response {
    let api = session.api(portal);
    let a = match api
        .get(&format!(
            "/attempts/{}?include=response_data,event.data,destination",
            enc(id)
        ))
        .await
    {
        Ok(a) => a,
        Err(f) => return failure(portal, session, &f),
    };
    let event_id = s(&a, "event_id");
    let dest_id = s(&a, "destination_id");
    let resp = &a["response_data"];
    let mut b = format!(
        "<p class=\"hint\"><a href=\"/portal/events\">Events</a> / <a href=\"/portal/events/{}\">event</a> / attempt</p>\
         <div class=\"head\"><h1>Attempt #{} {}</h1><form method=\"post\" action=\"/portal/retry\">{}\
         <input type=\"hidden\" name=\"event_id\" value=\"{}\"><input type=\"hidden\" name=\"destination_id\" value=\"{}\">\
         <input type=\"hidden\" name=\"back\" value=\"event\"><button type=\"submit\" class=\"btn primary\">Retry</button></form></div>",
        enc(event_id),
        a["attempt_number"].as_u64().unwrap_or(0),
        attempt_badge(&a),
        csrf(session),
        E(event_id),
        E(dest_id),
    );
    let _ = write!(
        b,
        "<dl class=\"kv\"><dt>Attempt id</dt><dd class=\"mono\">{}</dd><dt>Event</dt><dd class=\"mono\"><a href=\"/portal/events/{}\">{}</a></dd>\
         <dt>Destination</dt><dd class=\"mono\"><a href=\"/portal/destinations/{}\">{}</a></dd><dt>Topic</dt><dd>{}</dd>\
         <dt>Time</dt><dd>{}</dd><dt>Latency</dt><dd>{} ms</dd><dt>Code</dt><dd class=\"mono\">{}</dd>",
        E(id),
        enc(event_id),
        E(event_id),
        enc(dest_id),
        E(dest_id),
        E(s(&a, "topic")),
        time(&a["time"]),
        a["latency_ms"].as_u64().unwrap_or(0),
        E(s(&a, "code")),
    );
    if let Some(err) = resp["error"].as_str() {
        let _ = write!(b, "<dt>Error</dt><dd>{}</dd>", E(err));
    }
    b.push_str("</dl><h2>Request</h2>");
    let target = a["destination"]["target_url"]
        .as_str()
        .or(a["destination"]["target"].as_str())
        .unwrap_or("");
    if !target.is_empty() {
        let _ = write!(
            b,
            "<p class=\"mono\">{} {}</p>",
            if is_http(target) {
                "POST"
            } else {
                "Publish to"
            },
            E(target)
        );
    }
    b.push_str("<h3>Headers</h3>");
    let mut headers = String::new();
    match resp["request"]["headers"].as_object() {
        Some(h) => {
            for (k, v) in h {
                let v = v.as_str().unwrap_or("");
                let shown = if secret_header(k) && !v.ends_with("****") {
                    crate::wire::mask(v)
                } else {
                    v.to_string()
                };
                let _ = writeln!(headers, "{k}: {shown}");
            }
            if is_http(target) {
                headers.push_str("content-type: application/json\n(plus the destination's custom headers, if any)\n");
            }
        }
        None => headers.push_str(
            "content-type: application/json\n(the other headers of this attempt were not recorded)\n",
        ),
    }
    let _ = write!(
        b,
        "<pre class=\"code\" tabindex=\"0\" aria-label=\"Request headers\"><code>{}</code></pre><h3>Body</h3>{}",
        E(&headers),
        html::json_block(&a["event"]["data"], "Request body")
    );
    b.push_str("<h2>Response</h2>");
    if resp.get("status_code").is_some() || resp.get("headers").is_some() {
        let mut rh = String::new();
        for (k, v) in resp["headers"].as_object().into_iter().flatten() {
            let _ = writeln!(rh, "{k}: {}", v.as_str().unwrap_or(""));
        }
        let _ = write!(
            b,
            "<dl class=\"kv\"><dt>Status</dt><dd class=\"mono\">{}</dd></dl><h3>Headers</h3>\
             <pre class=\"code\" tabindex=\"0\" aria-label=\"Response headers\"><code>{}</code></pre><h3>Body</h3>\
             <pre class=\"code\" tabindex=\"0\" aria-label=\"Response body\"><code>{}</code></pre>",
            E(&resp["status_code"].to_string()),
            E(&rh),
            E(resp["body"].as_str().unwrap_or("")),
        );
        if resp["body_truncated"].as_bool() == Some(true) {
            b.push_str("<p class=\"hint\">The body was cut at the configured size limit.</p>");
        }
    } else if resp.is_object() {
        b.push_str(&html::json_block(resp, "Response details"));
    } else {
        b.push_str("<p class=\"hint\">No response was recorded.</p>");
    }
    let shell = shell(portal, session, alert);
    Html(status, html::page(&shell, "Attempt", Tab::Events, &b)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_expired_destination_is_badged_expired_in_list_and_page() {
        // The list (`destinations`) and the page (`destination`) both show `status_badge`.
        let expired = status_badge(&json!({"expired": true, "disabled_at": null}), None);
        assert!(expired.contains("Expired"), "{expired}");
        let live = status_badge(&json!({"expired": false, "disabled_at": null}), None);
        assert!(
            live.contains("Enabled") && !live.contains("Expired"),
            "{live}"
        );
    }
}
