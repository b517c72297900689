//! Lower-case hex, the one encoder behind every digest writ prints (the
//! engine's policy digest, the server's content digests, manifests and
//! decision-log request digests). Ten lines do not justify the `hex`
//! crate; a table keeps it off `format!` on the per-request path.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `prefix` followed by the lower-case hex of `bytes`.
pub(crate) fn prefixed(prefix: &str, bytes: &[u8]) -> String {
    let mut out = String::with_capacity(prefix.len() + 2 * bytes.len());
    out.push_str(prefix);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// The lower-case hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    prefixed("", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_two_digits_a_byte() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(prefixed("sha256:", &[0xab]), "sha256:ab");
        assert_eq!(encode(&[]), "");
    }
}
