//! The portal's stylesheet and script, compiled into the binary (no CDN, no build step), and
//! the small generated stylesheet that carries the operator's accent colour.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::PortalState;

const CSS: &str = include_str!("assets/portal.css");
const JS: &str = include_str!("assets/portal.js");

/// Whether `c` is `#rgb` or `#rrggbb` (the only accent colours accepted into CSS).
pub fn is_hex_color(c: &str) -> bool {
    c.strip_prefix('#').is_some_and(|h| {
        (h.len() == 3 || h.len() == 6) && h.chars().all(|ch| ch.is_ascii_hexdigit())
    })
}

/// `GET /portal/assets/{name}`.
pub async fn serve(State(portal): State<PortalState>, Path(name): Path<String>) -> Response {
    let (body, kind, cache) = match name.as_str() {
        "portal.css" => (
            CSS.to_string(),
            "text/css; charset=utf-8",
            "public, max-age=300",
        ),
        "portal.js" => (
            JS.to_string(),
            "text/javascript; charset=utf-8",
            "public, max-age=300",
        ),
        "theme.css" => {
            let accent = &portal.app.config.portal.brand_color;
            let css = if is_hex_color(accent) {
                format!(":root{{--accent:{accent};}}\n")
            } else {
                String::new()
            };
            (css, "text/css; charset=utf-8", "no-cache")
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_colors() {
        assert!(super::is_hex_color("#0a7"));
        assert!(super::is_hex_color("#00AA77"));
        assert!(!super::is_hex_color("red"));
        assert!(!super::is_hex_color("#00aa77;}body{"));
    }
}
