//! CPA queue payload -> [`Decoded`]. (Filled in by the decoder work.)

use crate::event::{DeadLetter, Decoded};

/// Decodes one queue item as received from CPA.
pub fn decode(item: &[u8], now_ms: i64) -> Decoded {
    let text = String::from_utf8_lossy(item);
    if text.trim().is_empty() {
        return Decoded::Blank;
    }
    Decoded::Dead(DeadLetter {
        payload: text.into_owned(),
        reason: "decoder not available".to_string(),
        created_at_ms: now_ms,
    })
}
