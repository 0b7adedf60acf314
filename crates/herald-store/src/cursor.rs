//! Opaque seek cursors: the sort key of a boundary row, `(time in µs, id)`, base64-encoded.
//! Clients must treat them as opaque; the encoding may change between versions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Result, StoreError};

/// Encodes a boundary row's sort key.
pub fn encode(time_us: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{time_us}:{id}"))
}

/// Decodes a cursor made by [`encode`].
pub fn decode(cursor: &str) -> Result<(i64, String)> {
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
    let (t, id) = text.split_once(':').ok_or(StoreError::BadCursor)?;
    let t = t.parse().map_err(|_| StoreError::BadCursor)?;
    Ok((t, id.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_garbage() {
        let c = super::encode(1_700_000_000_123_456, "evt_abc:def");
        assert_eq!(
            super::decode(&c).unwrap(),
            (1_700_000_000_123_456, "evt_abc:def".to_string())
        );
        assert!(super::decode("!!!").is_err());
        assert!(super::decode("bm9jb2xvbg").is_err()); // "nocolon"
    }
}
