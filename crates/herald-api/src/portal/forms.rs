//! The portal's forms and actions: the two-step add-destination wizard, destination settings,
//! enable / disable, rotate secret, test event, delete, retry.
//!
//! Every POST first checks the CSRF token and the request's origin, then turns the form into
//! the API's JSON body and calls the API route that does the same thing; the API validates
//! it. Field problems of a 422 (`config.url: …`) are shown next to their field, other
//! failures in a message at the top of the page the action came from.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::html::{self, Alert, E, Html, Shell, Tab, csrf, s};
use super::pages::{self, failure, icon, signing_keys, types};
use super::session::{Form, Session};
use super::{ApiFailure, PortalState, enc, see_other};

/// `GET /portal/destinations/new`: step 1, pick a type.
pub async fn pick_type(State(portal): State<PortalState>, session: Session) -> Response {
    let api = session.api(&portal);
    let types = match types(&api).await {
        Ok(t) => t,
        Err(f) => return failure(&portal, &session, &f),
    };
    let mut b = String::from(
        "<p class=\"hint\"><a href=\"/portal/destinations\">Destinations</a> / new</p>\
         <h1>Add destination</h1><p class=\"hint\">Step 1 of 2: choose where events go. \
         The type cannot be changed later. For most uses, Webhook is the one.</p>\
         <form method=\"get\" action=\"/portal/destinations/new/next\"><fieldset><legend>Destination type</legend><ul class=\"types\">",
    );
    for (i, (kind, t)) in types.iter().enumerate() {
        let preferred = &portal.app.config.portal.default_type;
        let checked = if kind == preferred || (i == 0 && !types.contains_key(preferred)) {
            " checked"
        } else {
            ""
        };
        let _ = write!(
            b,
            "<li><label>{icon}<input type=\"radio\" name=\"type\" value=\"{k}\"{checked}>\
             <span><span class=\"t\">{l}</span><span class=\"hint\">{d}</span></span></label></li>",
            icon = icon(Some(t)),
            k = E(kind),
            l = E(s(t, "label")),
            d = E(s(t, "description")),
        );
    }
    b.push_str("</ul></fieldset><div class=\"actions\"><button type=\"submit\" class=\"btn primary\">Next: configure</button>\
                <a class=\"btn ghost\" href=\"/portal/destinations\">Cancel</a></div></form>");
    pages::page(
        &portal,
        &session,
        None,
        "Add destination",
        Tab::Destinations,
        &b,
    )
}

/// What a destination form shows: submitted or stored values.
#[derive(Default)]
struct Values {
    config: BTreeMap<String, String>,
    credentials: BTreeMap<String, String>,
    all_topics: bool,
    topics: Vec<String>,
    filter: String,
}

impl Values {
    fn from_form(form: &Form) -> Self {
        let mut v = Values::default();
        for (k, val) in &form.fields {
            if let Some(key) = k.strip_prefix("config.") {
                v.config.insert(key.to_string(), val.clone());
            } else if let Some(key) = k.strip_prefix("credentials.") {
                v.credentials.insert(key.to_string(), val.clone());
            }
        }
        for t in form.all("topics") {
            if t == "*" {
                v.all_topics = true;
            } else {
                v.topics.extend(
                    t.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                );
            }
        }
        v.filter = form.get("filter").unwrap_or("").to_string();
        v
    }

    fn from_destination(d: &Value) -> Self {
        let map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        };
        let (all_topics, topics) = match &d["topics"] {
            Value::String(s) if s == "*" => (true, Vec::new()),
            Value::Array(a) => (
                a.iter().any(|t| t == "*"),
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "*")
                    .map(str::to_string)
                    .collect(),
            ),
            _ => (false, Vec::new()),
        };
        Values {
            config: map(&d["config"]),
            credentials: map(&d["credentials"]),
            all_topics,
            topics,
            filter: if d["filter"].is_object() {
                serde_json::to_string_pretty(&d["filter"]).unwrap_or_default()
            } else {
                String::new()
            },
        }
    }

    fn topics_json(&self) -> Value {
        if self.all_topics {
            json!("*")
        } else {
            json!(self.topics)
        }
    }
}

fn field_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn errors_html(id: &str, problems: &[&str]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    format!(
        "<p class=\"error\" id=\"e-{id}\">{}</p>",
        E(&problems.join("; "))
    )
}

/// One input generated from a schema field.
fn schema_field(
    b: &mut String,
    section: &str,
    f: &Value,
    value: Option<&str>,
    errors: Option<&ApiFailure>,
) {
    let key = s(f, "key");
    let name = format!("{section}.{key}");
    let id = format!("f-{}", field_id(&name));
    let required = f["required"].as_bool() == Some(true);
    let sensitive = f["sensitive"].as_bool() == Some(true);
    let problems = errors.map(|e| e.for_field(&name)).unwrap_or_default();
    let invalid = !problems.is_empty();
    let desc = s(f, "description");
    let mut described = Vec::new();
    if !desc.is_empty() {
        described.push(format!("h-{id}"));
    }
    if invalid {
        described.push(format!("e-{id}"));
    }
    let aria = format!(
        "{}{}{}",
        if described.is_empty() {
            String::new()
        } else {
            format!(" aria-describedby=\"{}\"", described.join(" "))
        },
        if invalid {
            " aria-invalid=\"true\""
        } else {
            ""
        },
        if required {
            " aria-required=\"true\""
        } else {
            ""
        },
    );
    let label = match s(f, "label") {
        "" => key,
        l => l,
    };
    let req = if required {
        "<span class=\"req\" aria-hidden=\"true\"> *</span>"
    } else {
        ""
    };
    let value = value
        .map(str::to_string)
        .or_else(|| f["default"].as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = write!(
        b,
        "<div class=\"field{}\">",
        if invalid { " invalid" } else { "" }
    );
    match s(f, "type") {
        "checkbox" => {
            let checked = if value == "true" { " checked" } else { "" };
            let _ = write!(
                b,
                "<label><input type=\"checkbox\" id=\"{id}\" name=\"{n}\" value=\"true\"{checked}{aria}> {l}{req}</label>",
                n = E(&name),
                l = E(label),
            );
        }
        "select" => {
            let _ = write!(
                b,
                "<label for=\"{id}\">{l}{req}</label><select id=\"{id}\" name=\"{n}\"{aria}>",
                n = E(&name),
                l = E(label),
            );
            if !required {
                let _ = write!(
                    b,
                    "<option value=\"\"{}>(default)</option>",
                    if value.is_empty() { " selected" } else { "" }
                );
            }
            for o in f["options"].as_array().into_iter().flatten() {
                let v = s(o, "value");
                let _ = write!(
                    b,
                    "<option value=\"{}\"{}>{}</option>",
                    E(v),
                    if v == value { " selected" } else { "" },
                    E(s(o, "label"))
                );
            }
            b.push_str("</select>");
        }
        "key_value_map" => {
            let _ = write!(
                b,
                "<label for=\"{id}\">{l}{req}</label><textarea id=\"{id}\" name=\"{n}\" rows=\"3\"{aria}>{v}</textarea>",
                n = E(&name),
                l = E(label),
                v = E(&value),
            );
        }
        _ => {
            let kind = if sensitive { "password" } else { "text" };
            let _ = write!(
                b,
                "<label for=\"{id}\">{l}{req}</label><input type=\"{kind}\" id=\"{id}\" name=\"{n}\" value=\"{v}\" autocomplete=\"off\" spellcheck=\"false\"{aria}>",
                n = E(&name),
                l = E(label),
                v = E(&value),
            );
        }
    }
    if !desc.is_empty() {
        let extra = if sensitive && !value.is_empty() {
            " Shown masked: leave it as it is to keep the stored value."
        } else {
            ""
        };
        let _ = write!(b, "<p class=\"hint\" id=\"h-{id}\">{}{extra}</p>", E(desc));
    }
    b.push_str(&errors_html(&id, &problems));
    b.push_str("</div>");
}

const FILTER_GUIDE: &str = "<details class=\"guide\"><summary>Filter syntax</summary>\
<p>A filter is a JSON object matched against <code>{\"topic\", \"time\", \"metadata\", \"data\"}</code> of each event. \
Keys are combined with AND; a plain value tests equality; keys starting with <code>$</code> are operators.</p>\
<ul><li><code>{\"data\": {\"role\": \"employee\"}}</code>: only events whose <code>data.role</code> is <code>employee</code></li>\
<li><code>{\"data\": {\"amount\": {\"$gte\": 100}}}</code>: comparisons <code>$gt $gte $lt $lte</code>, <code>$eq $neq</code></li>\
<li><code>{\"data\": {\"country\": {\"$in\": [\"DE\", \"FR\"]}}}</code>: one of several values</li>\
<li><code>{\"$or\": [{\"topic\": \"a\"}, {\"data\": {\"vip\": true}}]}</code>: <code>$or</code>, <code>$and</code>, <code>$not</code></li>\
<li><code>{\"data\": {\"email\": {\"$exist\": true}}}</code>: the field is present</li></ul>\
<p>Leave it empty to receive every event of the chosen topics.</p></details>";

/// The whole destination form (create or edit).
#[allow(clippy::too_many_arguments)]
fn destination_form(
    session: &Session,
    action: &str,
    spec: &Value,
    catalog: &Value,
    values: &Values,
    errors: Option<&ApiFailure>,
    editing: bool,
    submit: &str,
) -> String {
    let mut b = String::new();
    if let Some(e) = errors {
        // Problems that have no field of their own are listed at the top.
        let mut general: Vec<String> = e
            .problems
            .iter()
            .filter(|p| {
                let name = p.split_once(": ").map_or("", |(n, _)| n);
                !(name.starts_with("config.")
                    || name.starts_with("credentials.")
                    || name.starts_with("topics")
                    || name.starts_with("filter"))
            })
            .cloned()
            .collect();
        if e.problems.is_empty() {
            general.push(e.message.clone());
        }
        b.push_str("<div class=\"msg err\" role=\"alert\"><strong>The destination was not saved.</strong> Fix the fields marked below.");
        if !general.is_empty() {
            b.push_str("<ul>");
            for g in &general {
                let _ = write!(b, "<li>{}</li>", E(g));
            }
            b.push_str("</ul>");
        }
        b.push_str("</div>");
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{}\" novalidate>{}",
        E(action),
        csrf(session)
    );
    // Topics.
    let topic_problems = errors.map(|e| e.for_field("topics")).unwrap_or_default();
    let _ = write!(
        b,
        "<fieldset class=\"field{}\" aria-describedby=\"h-topics{}\"><legend>Topics<span class=\"req\" aria-hidden=\"true\"> *</span></legend>\
         <p class=\"hint\" id=\"h-topics\">The events this destination receives. <a href=\"/portal/topics\">Topic catalog</a></p><div class=\"checks\">",
        if topic_problems.is_empty() {
            ""
        } else {
            " invalid"
        },
        if topic_problems.is_empty() {
            ""
        } else {
            " e-topics"
        },
    );
    let _ = write!(
        b,
        "<label><input type=\"checkbox\" name=\"topics\" value=\"*\"{}> <strong>All topics (*)</strong></label>",
        if values.all_topics { " checked" } else { "" }
    );
    let names: Vec<&str> = catalog
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| s(t, "name"))
        .collect();
    if names.is_empty() {
        let _ = write!(
            b,
            "</div><label for=\"f-topics-list\">Or these topics, separated by commas</label>\
             <input type=\"text\" id=\"f-topics-list\" name=\"topics\" value=\"{}\">",
            E(&values.topics.join(", "))
        );
    } else {
        for n in &names {
            let checked = if values.topics.iter().any(|t| t == n) {
                " checked"
            } else {
                ""
            };
            let _ = write!(
                b,
                "<label><input type=\"checkbox\" name=\"topics\" value=\"{v}\"{checked}> {v}</label>",
                v = E(n)
            );
        }
        // Subscribed patterns or topics not in the catalog stay visible (and editable).
        for t in values
            .topics
            .iter()
            .filter(|t| !names.contains(&t.as_str()))
        {
            let _ = write!(
                b,
                "<label><input type=\"checkbox\" name=\"topics\" value=\"{v}\" checked> {v}</label>",
                v = E(t)
            );
        }
        b.push_str("</div>");
    }
    if !topic_problems.is_empty() {
        let _ = write!(
            b,
            "<p class=\"error\" id=\"e-topics\">{}</p>",
            E(&topic_problems.join("; "))
        );
    }
    b.push_str("</fieldset>");
    // Configuration and credentials from the type's schema.
    let config_fields = spec["config_fields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !config_fields.is_empty() {
        b.push_str("<fieldset><legend>Configuration</legend>");
        for f in &config_fields {
            schema_field(
                &mut b,
                "config",
                f,
                values.config.get(s(f, "key")).map(String::as_str),
                errors,
            );
        }
        b.push_str("</fieldset>");
    }
    let managed = signing_keys(spec);
    let cred_fields: Vec<Value> = spec["credential_fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| !managed.contains(&s(f, "key")))
        .cloned()
        .collect();
    if !cred_fields.is_empty() {
        b.push_str("<fieldset><legend>Credentials</legend>");
        if editing {
            b.push_str("<p class=\"hint\">Secret values are shown masked. A masked value left as it is keeps the stored secret.</p>");
        }
        for f in &cred_fields {
            schema_field(
                &mut b,
                "credentials",
                f,
                values.credentials.get(s(f, "key")).map(String::as_str),
                errors,
            );
        }
        b.push_str("</fieldset>");
    }
    if !editing
        && spec["credential_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| managed.contains(&s(f, "key")))
    {
        b.push_str("<p class=\"hint\">A signing secret is generated for you; it is shown on the destination's page.</p>");
    }
    // Filter.
    let filter_problems = errors.map(|e| e.for_field("filter")).unwrap_or_default();
    let fid = "f-filter";
    let _ = write!(
        b,
        "<fieldset class=\"field{}\"><legend>Event filter (optional)</legend>\
         <label for=\"{fid}\">Filter as JSON</label>\
         <textarea id=\"{fid}\" name=\"filter\" rows=\"5\" spellcheck=\"false\" aria-describedby=\"h-{fid}{}\"{}>{}</textarea>\
         <p class=\"hint\" id=\"h-{fid}\">Only events whose payload matches are delivered.</p>{}{FILTER_GUIDE}</fieldset>",
        if filter_problems.is_empty() {
            ""
        } else {
            " invalid"
        },
        if filter_problems.is_empty() {
            ""
        } else {
            " e-f-filter"
        },
        if filter_problems.is_empty() {
            ""
        } else {
            " aria-invalid=\"true\""
        },
        E(&values.filter),
        errors_html(fid, &filter_problems),
    );
    let _ = write!(
        b,
        "<div class=\"actions\"><button type=\"submit\" class=\"btn primary\">{}</button></div></form>",
        E(submit)
    );
    b
}

async fn spec_and_catalog(
    portal: &PortalState,
    session: &Session,
    kind: &str,
) -> Result<(Value, Value), Response> {
    let api = session.api(portal);
    let spec = api
        .get(&format!("/destination-types/{}", enc(kind)))
        .await
        .map_err(|f| failure(portal, session, &f))?;
    let catalog = api
        .get("/topics/catalog")
        .await
        .map_err(|f| failure(portal, session, &f))?;
    Ok((spec, catalog))
}

fn new_page(
    portal: &PortalState,
    session: &Session,
    kind: &str,
    spec: &Value,
    catalog: &Value,
    values: &Values,
    errors: Option<&ApiFailure>,
) -> Response {
    let mut b = format!(
        "<p class=\"hint\"><a href=\"/portal/destinations\">Destinations</a> / <a href=\"/portal/destinations/new\">new</a> / {l}</p>\
         <h1>Add a {l} destination</h1><p class=\"hint\">Step 2 of 2: configure it. Fields marked <span class=\"req\">*</span> are required.</p>",
        l = E(s(spec, "label"))
    );
    b.push_str(&destination_form(
        session,
        &format!("/portal/destinations/new/{}", enc(kind)),
        spec,
        catalog,
        values,
        errors,
        false,
        "Create destination",
    ));
    form_page(portal, session, "Add destination", &b, errors.is_some())
}

/// `GET /portal/destinations/new/{kind}`: step 2, the form (`next?type=` comes from step 1).
pub async fn new_form(
    State(portal): State<PortalState>,
    session: Session,
    Path(kind): Path<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    if kind == "next" {
        let q = pages::Q::parse(raw.as_deref());
        return match q.get("type") {
            Some(t) => see_other(&format!("/portal/destinations/new/{}", enc(t))),
            None => see_other("/portal/destinations/new"),
        };
    }
    let (spec, catalog) = match spec_and_catalog(&portal, &session, &kind).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    new_page(
        &portal,
        &session,
        &kind,
        &spec,
        &catalog,
        &Values::default(),
        None,
    )
}

/// The JSON filter of a form: `Ok(None)` when empty.
fn parse_filter(text: &str) -> Result<Option<Value>, ApiFailure> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(local_problem("filter", "must be a JSON object")),
        Err(e) => Err(local_problem("filter", &format!("is not valid JSON: {e}"))),
    }
}

fn local_problem(field: &str, problem: &str) -> ApiFailure {
    ApiFailure {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("{field}: {problem}"),
        problems: vec![format!("{field}: {problem}")],
    }
}

/// `POST /portal/destinations/new/{kind}`: creates through `POST /tenants/{t}/destinations`.
pub async fn create(
    State(portal): State<PortalState>,
    session: Session,
    Path(kind): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = form.check(&portal, &session) {
        return r;
    }
    let (spec, catalog) = match spec_and_catalog(&portal, &session, &kind).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let values = Values::from_form(&form);
    let filter = match parse_filter(&values.filter) {
        Ok(f) => f,
        Err(e) => {
            return new_page(&portal, &session, &kind, &spec, &catalog, &values, Some(&e));
        }
    };
    let managed = signing_keys(&spec);
    let non_empty = |m: &BTreeMap<String, String>| -> Map<String, Value> {
        m.iter()
            .filter(|(k, v)| !v.is_empty() && !managed.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    };
    let mut body = json!({
        "type": kind,
        "topics": values.topics_json(),
        "config": non_empty(&values.config),
        "credentials": non_empty(&values.credentials),
    });
    if !values.all_topics && values.topics.is_empty() {
        body["topics"] = Value::Null;
    }
    if let Some(f) = filter {
        body["filter"] = f;
    }
    let api = session.api(&portal);
    let path = format!("/tenants/{}/destinations", enc(&session.tenant));
    match api.call(Method::POST, &path, Some(&body)).await {
        Ok(d) => see_other(&format!(
            "/portal/destinations/{}?notice=created",
            enc(s(&d, "id"))
        )),
        Err(f) if f.status.is_client_error() && f.status != StatusCode::UNAUTHORIZED => {
            new_page(&portal, &session, &kind, &spec, &catalog, &values, Some(&f))
        }
        Err(f) => failure(&portal, &session, &f),
    }
}

fn dest_path(session: &Session, id: &str) -> String {
    format!("/tenants/{}/destinations/{}", enc(&session.tenant), enc(id))
}

async fn settings_page(
    portal: &PortalState,
    session: &Session,
    id: &str,
    submitted: Option<&Values>,
    errors: Option<&ApiFailure>,
) -> Response {
    let api = session.api(portal);
    let d = match api.get(&dest_path(session, id)).await {
        Ok(d) => d,
        Err(f) => return failure(portal, session, &f),
    };
    let (spec, catalog) = match spec_and_catalog(portal, session, s(&d, "type")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let stored = Values::from_destination(&d);
    let values = submitted.unwrap_or(&stored);
    let mut b = format!(
        "<p class=\"hint\"><a href=\"/portal/destinations\">Destinations</a> / <a href=\"/portal/destinations/{href}\">{t}</a> / settings</p>\
         <h1>Settings</h1><p class=\"hint\">{l} destination <span class=\"mono\">{id}</span>. The type cannot be changed.</p>",
        href = enc(id),
        t = E(match s(&d, "target") {
            "" => id,
            t => t,
        }),
        l = E(s(&spec, "label")),
        id = E(id),
    );
    b.push_str(&destination_form(
        session,
        &format!("/portal/destinations/{}/settings", enc(id)),
        &spec,
        &catalog,
        values,
        errors,
        true,
        "Save settings",
    ));
    form_page(portal, session, "Settings", &b, errors.is_some())
}

/// `GET /portal/destinations/{id}/settings`.
pub async fn settings(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    settings_page(&portal, &session, &id, None, None).await
}

/// `POST /portal/destinations/{id}/settings`: a merge-patch through
/// `PATCH /tenants/{t}/destinations/{id}`.
pub async fn save_settings(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = form.check(&portal, &session) {
        return r;
    }
    let api = session.api(&portal);
    let d = match api.get(&dest_path(&session, &id)).await {
        Ok(d) => d,
        Err(f) => return failure(&portal, &session, &f),
    };
    let (spec, _) = match spec_and_catalog(&portal, &session, s(&d, "type")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let values = Values::from_form(&form);
    let filter = match parse_filter(&values.filter) {
        Ok(f) => f,
        Err(e) => return settings_page(&portal, &session, &id, Some(&values), Some(&e)).await,
    };
    // Every schema field of the form is sent: emptied optional fields are removed (null),
    // masked secrets go back as shown (the API keeps the stored value).
    let section = |name: &str, submitted: &BTreeMap<String, String>, stored: &Value| {
        let mut out = Map::new();
        for f in spec[format!("{name}_fields")]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = s(f, "key");
            if signing_keys(&spec).contains(&key) {
                continue;
            }
            let had = stored.get(key).is_some();
            let v = match (s(f, "type"), submitted.get(key)) {
                ("checkbox", Some(_)) => Value::String("true".into()),
                ("checkbox", None) if had => Value::String("false".into()),
                ("checkbox", None) => continue,
                (_, Some(v)) if !v.is_empty() => Value::String(v.clone()),
                (_, _) if had => Value::Null,
                _ => continue,
            };
            out.insert(key.to_string(), v);
        }
        Value::Object(out)
    };
    let mut body = json!({
        "topics": values.topics_json(),
        "config": section("config", &values.config, &d["config"]),
        "credentials": section("credential", &values.credentials, &d["credentials"]),
        "filter": filter.unwrap_or(Value::Null),
    });
    if !values.all_topics && values.topics.is_empty() {
        body["topics"] = json!([]);
    }
    match api
        .call(Method::PATCH, &dest_path(&session, &id), Some(&body))
        .await
    {
        Ok(_) => see_other(&format!("/portal/destinations/{}?notice=saved", enc(&id))),
        Err(f)
            if f.status.is_client_error()
                && f.status != StatusCode::UNAUTHORIZED
                && f.status != StatusCode::NOT_FOUND =>
        {
            settings_page(&portal, &session, &id, Some(&values), Some(&f)).await
        }
        Err(f) => failure(&portal, &session, &f),
    }
}

/// Runs one API call for an action on a destination; success redirects to the destination
/// page with `notice`, failure shows the page with the API's message.
#[allow(clippy::too_many_arguments)]
async fn destination_action(
    portal: PortalState,
    session: Session,
    id: String,
    form: Form,
    method: Method,
    suffix: &str,
    body: Option<Value>,
    notice: &str,
) -> Response {
    if let Err(r) = form.check(&portal, &session) {
        return r;
    }
    let api = session.api(&portal);
    let path = format!("{}{suffix}", dest_path(&session, &id));
    match api.call(method, &path, body.as_ref()).await {
        Ok(v) => {
            let mut to = format!("/portal/destinations/{}?notice={notice}", enc(&id));
            if notice == "test"
                && let Some(ev) = v["id"].as_str()
            {
                let _ = write!(to, "&event={}", enc(ev));
            }
            see_other(&to)
        }
        Err(f)
            if f.status.is_client_error()
                && f.status != StatusCode::UNAUTHORIZED
                && f.status != StatusCode::NOT_FOUND =>
        {
            let msg = if f.problems.is_empty() {
                f.message.clone()
            } else {
                f.problems.join("; ")
            };
            pages::destination_page(&portal, &session, &id, Some(Alert::Err(msg)), f.status).await
        }
        Err(f) => failure(&portal, &session, &f),
    }
}

/// `POST /portal/destinations/{id}/enable`.
pub async fn enable(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    destination_action(
        portal,
        session,
        id,
        form,
        Method::PUT,
        "/enable",
        None,
        "enabled",
    )
    .await
}

/// `POST /portal/destinations/{id}/disable`.
pub async fn disable(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    destination_action(
        portal,
        session,
        id,
        form,
        Method::PUT,
        "/disable",
        None,
        "disabled",
    )
    .await
}

/// `POST /portal/destinations/{id}/rotate`: `credentials.rotate_secret: true`.
pub async fn rotate(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let body = json!({ "credentials": { "rotate_secret": true } });
    destination_action(
        portal,
        session,
        id,
        form,
        Method::PATCH,
        "",
        Some(body),
        "rotated",
    )
    .await
}

/// `POST /portal/destinations/{id}/test`: the test-event route.
pub async fn send_test(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let body = match form.get("topic").filter(|t| !t.is_empty()) {
        Some(t) => json!({ "topic": t }),
        None => json!({}),
    };
    destination_action(
        portal,
        session,
        id,
        form,
        Method::POST,
        "/test",
        Some(body),
        "test",
    )
    .await
}

/// `GET /portal/destinations/{id}/delete`: the confirmation page.
pub async fn confirm_delete(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let api = session.api(&portal);
    let d = match api.get(&dest_path(&session, &id)).await {
        Ok(d) => d,
        Err(f) => return failure(&portal, &session, &f),
    };
    let target = match s(&d, "target") {
        "" => id.as_str(),
        t => t,
    };
    let b = format!(
        "<h1>Delete this destination?</h1><p>The destination <strong class=\"mono\">{t}</strong> and its pending \
         deliveries will be removed permanently. Events are no longer delivered to it. This cannot be undone.</p>\
         <form method=\"post\" action=\"/portal/destinations/{href}/delete\" class=\"actions\">{csrf}\
         <button type=\"submit\" class=\"btn danger\">Delete permanently</button>\
         <a class=\"btn\" href=\"/portal/destinations/{href}\">Cancel</a></form>",
        t = E(target),
        href = enc(&id),
        csrf = csrf(&session),
    );
    pages::page(
        &portal,
        &session,
        None,
        "Delete destination",
        Tab::Destinations,
        &b,
    )
}

/// `POST /portal/destinations/{id}/delete`.
pub async fn delete(
    State(portal): State<PortalState>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Err(r) = form.check(&portal, &session) {
        return r;
    }
    let api = session.api(&portal);
    match api
        .call(Method::DELETE, &dest_path(&session, &id), None)
        .await
    {
        Ok(_) => see_other("/portal/destinations?notice=deleted"),
        Err(f) => failure(&portal, &session, &f),
    }
}

/// `POST /portal/retry` (`event_id`, `destination_id`): `POST /retry`.
pub async fn retry(State(portal): State<PortalState>, session: Session, form: Form) -> Response {
    if let Err(r) = form.check(&portal, &session) {
        return r;
    }
    let event_id = form.get("event_id").unwrap_or("").to_string();
    let destination_id = form.get("destination_id").unwrap_or("").to_string();
    let api = session.api(&portal);
    let body = json!({ "event_id": event_id, "destination_id": destination_id });
    match api.call(Method::POST, "/retry", Some(&body)).await {
        Ok(_) => see_other(&format!("/portal/events/{}?notice=retried", enc(&event_id))),
        Err(f)
            if f.status == StatusCode::BAD_REQUEST
                || f.status == StatusCode::UNPROCESSABLE_ENTITY =>
        {
            pages::event_page(
                &portal,
                &session,
                &event_id,
                Some(Alert::Err(f.message)),
                f.status,
            )
            .await
        }
        Err(f) => failure(&portal, &session, &f),
    }
}

/// A destination form page: 422 when it shows the server's field errors, else 200.
fn form_page(
    portal: &PortalState,
    session: &Session,
    title: &str,
    body: &str,
    has_errors: bool,
) -> Response {
    let shell = Shell {
        config: &portal.app.config.portal,
        session,
        alert: None,
    };
    let status = if has_errors {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Html(status, html::page(&shell, title, Tab::Destinations, body)).into_response()
}
