//! Percent-decoding shared by the proxy's path check, the admin-key screen and the
//! price-sync proxy URL.

/// `%XX` sequences decoded; a `%` not followed by two hex digits is kept as it is.
pub(crate) fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |byte: u8| char::from(byte).to_digit(16);
        if bytes[index] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(index + 1).and_then(|byte| hex(*byte)),
                bytes.get(index + 2).and_then(|byte| hex(*byte)),
            )
        {
            out.push((high * 16 + low) as u8);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn hex_pairs_are_decoded_and_anything_else_kept() {
        assert_eq!(decode("a%2Fb%2f%41"), b"a/b/A");
        assert_eq!(decode("100%"), b"100%");
        assert_eq!(decode("%zz%4"), b"%zz%4");
        assert_eq!(decode("%+1"), b"%+1");
        assert_eq!(decode("a+b"), b"a+b");
    }
}
