//! HTML building blocks: escaping, the page shell with the operator's branding, messages,
//! and small widgets shared by the pages.
//!
//! Pages are built as strings. Every value that did not come from this file goes through
//! [`E`] (text and attribute escaping) or [`enc`](super::enc) (URL components): tenant data
//! such as destination ids, metadata, payloads and error messages is never trusted.

use std::fmt::{self, Write as _};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::PortalConfig;
use super::session::{CSRF_FIELD, Session};

/// Escapes text for element content and quoted attribute values.
pub struct E<'a>(pub &'a str);

impl fmt::Display for E<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// Which tab a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Destinations,
    Topics,
    Events,
}

/// A message shown at the top of a page.
#[derive(Debug, Clone)]
pub enum Alert {
    /// Something worked.
    Ok(String),
    /// Something failed.
    Err(String),
}

/// Everything the page shell needs.
pub struct Shell<'a> {
    pub config: &'a PortalConfig,
    pub session: &'a Session,
    pub alert: Option<Alert>,
}

fn org(config: &PortalConfig) -> &str {
    if config.organization_name.trim().is_empty() {
        "Herald"
    } else {
        config.organization_name.trim()
    }
}

fn theme_attr(config: &PortalConfig, session: Option<&Session>) -> &'static str {
    let asked = match config.force_theme.as_str() {
        "light" | "dark" => config.force_theme.as_str(),
        _ => session.map_or("", |s| s.theme.as_str()),
    };
    match asked {
        "light" => " data-theme=\"light\"",
        "dark" => " data-theme=\"dark\"",
        _ => "",
    }
}

fn head(out: &mut String, config: &PortalConfig, session: Option<&Session>, title: &str) {
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"{theme}><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\">\
         <title>{title} · {org} webhooks</title>\
         <link rel=\"stylesheet\" href=\"/portal/assets/portal.css\">\
         <link rel=\"stylesheet\" href=\"/portal/assets/theme.css\">\
         <script src=\"/portal/assets/portal.js\" defer></script></head><body>",
        theme = theme_attr(config, session),
        title = E(title),
        org = E(org(config)),
    );
}

fn brand(out: &mut String, config: &PortalConfig) {
    out.push_str("<div class=\"brand\">");
    if !config.logo.is_empty() {
        let _ = write!(
            out,
            "<img src=\"{}\" alt=\"\" class=\"logo\" referrerpolicy=\"no-referrer\">",
            E(&config.logo)
        );
    }
    let _ = write!(
        out,
        "<span class=\"org\">{}</span> <span class=\"product\">Webhooks</span></div>",
        E(org(config))
    );
}

/// The hidden CSRF field of a form.
pub fn csrf(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">",
        E(&session.csrf)
    )
}

/// A full page inside the shell.
pub fn page(shell: &Shell<'_>, title: &str, tab: Tab, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    head(&mut out, shell.config, Some(shell.session), title);
    out.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\">");
    brand(&mut out, shell.config);
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/portal/logout\" class=\"signout\">{}\
         <button type=\"submit\" class=\"btn ghost small\">Sign out</button></form></header>",
        csrf(shell.session)
    );
    out.push_str("<nav class=\"tabs\" aria-label=\"Sections\"><ul>");
    for (t, href, label) in [
        (Tab::Destinations, "/portal/destinations", "Destinations"),
        (Tab::Topics, "/portal/topics", "Topic catalog"),
        (Tab::Events, "/portal/events", "Events and deliveries"),
    ] {
        let current = if t == tab {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<li><a href=\"{href}\"{current}>{label}</a></li>");
    }
    out.push_str("</ul></nav><main id=\"main\" tabindex=\"-1\">");
    if let Some(a) = &shell.alert {
        out.push_str(&alert(a));
    }
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

/// A message box.
pub fn alert(a: &Alert) -> String {
    match a {
        Alert::Ok(m) => format!("<div class=\"msg ok\" role=\"status\">{}</div>", E(m)),
        Alert::Err(m) => format!("<div class=\"msg err\" role=\"alert\">{}</div>", E(m)),
    }
}

/// A page without navigation (expired session, refusals).
pub fn bare_page(config: &PortalConfig, title: &str, text: &str) -> Html {
    let mut out = String::new();
    head(&mut out, config, None, title);
    out.push_str("<header class=\"top\">");
    brand(&mut out, config);
    let _ = write!(
        out,
        "</header><main id=\"main\" class=\"bare\"><h1>{}</h1><p>{}</p>",
        E(title),
        E(text)
    );
    if !config.referer_url.is_empty() {
        let _ = write!(
            out,
            "<p><a class=\"btn primary\" href=\"{}\">Back to {}</a></p>",
            E(&config.referer_url),
            E(org(config))
        );
    }
    out.push_str("</main></body></html>");
    Html(StatusCode::OK, out)
}

/// A 500 page.
pub fn error_page(config: &PortalConfig, detail: &str) -> Response {
    tracing::error!(error = %detail, "portal page failed");
    let mut r = bare_page(
        config,
        "Something went wrong",
        "The page could not be loaded. Try again in a moment.",
    )
    .into_response();
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// An HTML response with the portal's security headers.
pub struct Html(pub StatusCode, pub String);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        (
            self.0,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "same-origin"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; \
                     form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ],
            self.1,
        )
            .into_response()
    }
}

/// A timestamp for people: `2026-12-01 07:40:12 UTC`, in a `<time>` element.
pub fn time(v: &Value) -> String {
    match v.as_str() {
        Some(s) => {
            let short = s
                .parse::<jiff::Timestamp>()
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|_| s.to_string());
            format!("<time datetime=\"{}\">{}</time>", E(s), E(&short))
        }
        None => "—".to_string(),
    }
}

/// A status badge.
pub fn badge(kind: &str, text: &str) -> String {
    format!("<span class=\"badge {}\">{}</span>", E(kind), E(text))
}

/// Pretty-printed JSON in a `<pre>`.
pub fn json_block(v: &Value, label: &str) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    format!(
        "<pre class=\"code\" tabindex=\"0\" aria-label=\"{}\"><code>{}</code></pre>",
        E(label),
        E(&text)
    )
}

/// A string field of a JSON object, or "".
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Topics as text: `All topics (*)` or a comma-separated list.
pub fn topics_text(v: &Value) -> String {
    match v {
        Value::String(s) if s == "*" => "All topics (*)".to_string(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::E;

    #[test]
    fn escaping() {
        assert_eq!(
            E("<a href=\"x\">'&'</a>").to_string(),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(E("plain é").to_string(), "plain é");
    }
}
