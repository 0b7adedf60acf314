//! The one template engine of every destination type: names and keys computed per message.
//!
//! Two spellings, one evaluator:
//!
//! - **Placeholder templates** (RabbitMQ routing key, NATS subject, Redis stream key, MQTT
//!   topic — Herald extensions): literal text with `{…}` placeholders. `{topic}` and
//!   `{event_id}` are the common ones; any JMESPath expression over the message context
//!   works inside the braces (`{data.region}`, `{metadata."tenant-tier"}`).
//! - **Key templates** (Kafka and Kinesis `partition_key_template`, S3 `key_template` — the
//!   Outpost contract's): the whole text is one JMESPath expression over the same context.
//!
//! The context of a message is `{topic, event_id, data, metadata, time}`: `data` is the
//! event data, `metadata` Outpost's message-system metadata (`event-id`, `topic`, `timestamp`
//! and the event's metadata, plus the engine's headers), `time` the event time's parts
//! (`year`, `month`, `day`, `hour`, `minute`, `second`, `date`, `datetime`, `unix`,
//! `rfc3339`, `rfc3339_nano`). It is built only for templates that read it: `{topic}` and
//! `{event_id}` cost a string copy.

use std::borrow::Cow;

use herald_core::destination::OutboundMessage;
use jmespath::ast::Ast;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// The top-level names of the context (see the module docs).
const ROOTS: [&str; 5] = ["topic", "event_id", "data", "metadata", "time"];

/// A compiled template.
#[derive(Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone)]
enum Part {
    Lit(String),
    Topic,
    EventId,
    Expr(jmespath::Expression<'static>),
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

/// The leftmost field name an expression reads, when it starts with one.
fn leftmost(ast: &Ast) -> Option<&str> {
    match ast {
        Ast::Field { name, .. } => Some(name),
        Ast::Subexpr { lhs, .. } | Ast::Projection { lhs, .. } | Ast::Flatten { node: lhs, .. } => {
            leftmost(lhs)
        }
        _ => None,
    }
}

fn compile(expr: &str) -> Result<jmespath::Expression<'static>, String> {
    jmespath::compile(expr).map_err(|e| format!("{expr:?} is not a valid JMESPath expression: {e}"))
}

impl Template {
    /// Parses a placeholder template; names the problem when a placeholder is unclosed,
    /// not an expression, or reads a name outside the context.
    pub fn placeholders(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!(
                    "{raw:?} has a '}}' without '{{'; placeholders are {{topic}}, {{event_id}} or {{<JMESPath>}}"
                ));
            }
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{raw:?} has an unclosed '{{'"))?;
            let inner = &after[..close];
            parts.push(match inner {
                "topic" => Part::Topic,
                "event_id" => Part::EventId,
                other => {
                    let expr = compile(other)?;
                    if let Some(name) = leftmost(expr.as_ast())
                        && !ROOTS.contains(&name)
                    {
                        return Err(format!(
                            "{raw:?} uses {{{other}}}; placeholders read {} (e.g. {{topic}}, {{event_id}}, {{data.field}})",
                            ROOTS.join(", ")
                        ));
                    }
                    Part::Expr(expr)
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self {
            source: raw.to_string(),
            parts,
        })
    }

    /// Compiles a key template: the whole text is one JMESPath expression.
    pub fn expression(raw: &str) -> Result<Self, String> {
        Ok(Self {
            source: raw.to_string(),
            parts: vec![Part::Expr(compile(raw)?)],
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The literal text, with placeholders left out (for length checks).
    pub fn literal_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Lit(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Renders the template for one message; `None` when it yields nothing (an expression
    /// that evaluates to null or an empty string, and no literal text).
    pub fn render(&self, msg: &OutboundMessage) -> Result<Option<String>, String> {
        let needs_context = self.parts.iter().any(|p| matches!(p, Part::Expr(_)));
        let ctx = if needs_context {
            Some(jmespath::Variable::from_serializable(context(msg)).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Topic => out.push_str(&msg.topic),
                Part::EventId => out.push_str(&msg.event_id),
                Part::Expr(e) => {
                    let Some(ctx) = &ctx else { continue };
                    let v = e.search(ctx.clone()).map_err(|e| e.to_string())?;
                    let v = serde_json::to_value(&*v).map_err(|e| e.to_string())?;
                    match v {
                        Value::Null => {}
                        Value::String(s) => out.push_str(&s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(&b.to_string()),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

impl<'de> Deserialize<'de> for Template {
    /// Deserializes the placeholder spelling; key templates use [`KeyTemplate`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::placeholders(&raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 1 })
    }
}

/// A [`Template`] in the key-template spelling (one JMESPath expression).
#[derive(Debug, Clone)]
pub struct KeyTemplate(pub Template);

impl<'de> Deserialize<'de> for KeyTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Template::expression(&raw)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for KeyTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl JsonSchema for KeyTemplate {
    fn schema_name() -> Cow<'static, str> {
        "KeyTemplate".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// The message context templates read (see the module docs).
pub fn context(msg: &OutboundMessage) -> Value {
    json!({
        "topic": msg.topic,
        "event_id": msg.event_id,
        "data": body_json(msg),
        "metadata": metadata(msg),
        "time": time_fields(msg.time),
    })
}

/// Outpost's metadata map for message systems — `event-id`, `topic`, `timestamp` (Unix
/// seconds of the attempt) and the event's metadata. The engine's headers (signature
/// included) are added under their own names when they do not collide.
pub fn metadata(msg: &OutboundMessage) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event-id".into(), Value::String(msg.event_id.clone()));
    m.insert("topic".into(), Value::String(msg.topic.clone()));
    m.insert(
        "timestamp".into(),
        Value::String(jiff::Timestamp::now().as_second().to_string()),
    );
    for (k, v) in &msg.metadata {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    for (k, v) in &msg.headers {
        m.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    m
}

/// The message's headers as one ordered JSON object of strings.
pub fn headers_object(msg: &OutboundMessage) -> Map<String, Value> {
    msg.headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// The event data as JSON (`null` if the body somehow is not JSON).
pub fn body_json(msg: &OutboundMessage) -> Value {
    serde_json::from_slice(&msg.body).unwrap_or(Value::Null)
}

/// The event time's parts, as Outpost's S3 key templates read them under `time`.
pub fn time_fields(t: jiff::Timestamp) -> Value {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    let dt = z.datetime();
    json!({
        "year": format!("{:04}", dt.year()),
        "month": format!("{:02}", dt.month()),
        "day": format!("{:02}", dt.day()),
        "hour": format!("{:02}", dt.hour()),
        "minute": format!("{:02}", dt.minute()),
        "second": format!("{:02}", dt.second()),
        "date": z.strftime("%Y-%m-%d").to_string(),
        "datetime": z.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
        "unix": t.as_second().to_string(),
        "rfc3339": t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "rfc3339_nano": rfc3339_nano(t),
    })
}

/// RFC 3339 with as many fraction digits as needed (Go's `time.RFC3339Nano`).
fn rfc3339_nano(t: jiff::Timestamp) -> String {
    let base = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg() -> OutboundMessage {
        OutboundMessage {
            event_id: "evt_1".into(),
            delivery_id: "dlv_1".into(),
            topic: "user.created".into(),
            time: "2024-05-06T07:08:09.120Z".parse().unwrap(),
            body: std::sync::Arc::from(&br#"{"user_id":"u1","n":7}"#[..]),
            headers: vec![],
            metadata: [("tier".to_string(), "gold".to_string())].into(),
            timeout: Duration::from_secs(1),
        }
    }

    fn r(t: &Template) -> Option<String> {
        t.render(&msg()).unwrap()
    }

    #[test]
    fn placeholders() {
        let t = Template::placeholders("events.{topic}.{event_id}").unwrap();
        assert_eq!(r(&t).as_deref(), Some("events.user.created.evt_1"));
        assert!(!t.is_literal());
        assert_eq!(t.literal_text(), "events..");
        assert!(Template::placeholders("plain").unwrap().is_literal());
        let t = Template::placeholders("u.{data.user_id}.{metadata.tier}").unwrap();
        assert_eq!(r(&t).as_deref(), Some("u.u1.gold"));
        assert!(
            Template::placeholders("{nope}")
                .unwrap_err()
                .contains("{nope}")
        );
        assert!(
            Template::placeholders("a{topic")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::placeholders("a}").is_err());
        assert!(Template::placeholders("").is_err());
        assert!(Template::placeholders("{join(}").is_err());
    }

    #[test]
    fn key_templates_render_outpost_examples() {
        let t = Template::expression(r#"metadata."event-id""#).unwrap();
        assert_eq!(r(&t).as_deref(), Some("evt_1"));
        let t = Template::expression("data.n").unwrap();
        assert_eq!(r(&t).as_deref(), Some("7"));
        assert_eq!(r(&Template::expression("data.missing").unwrap()), None);
        let t = Template::expression(
            r#"join('/', [time.year, time.month, time.day, metadata."event-id"])"#,
        )
        .unwrap();
        assert_eq!(r(&t).as_deref(), Some("2024/05/06/evt_1"));
        assert!(Template::expression("join(").is_err());
    }

    #[test]
    fn rfc3339_nano_trims_trailing_zeros() {
        let t: jiff::Timestamp = "2024-05-06T07:08:09.120Z".parse().unwrap();
        assert_eq!(rfc3339_nano(t), "2024-05-06T07:08:09.12Z");
        let t: jiff::Timestamp = "2024-05-06T07:08:09Z".parse().unwrap();
        assert_eq!(rfc3339_nano(t), "2024-05-06T07:08:09Z");
        assert_eq!(time_fields(t)["date"], "2024-05-06");
    }
}
