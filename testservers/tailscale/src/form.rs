//! `application/x-www-form-urlencoded` decoding for the OAuth and control endpoints.

/// Splits and decodes a form body into its fields, in order.
pub(crate) fn decode_form(body: &str) -> Result<Vec<(String, String)>, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes one form value: `+` is a space and `%XX` a byte.
pub(crate) fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .ok_or_else(|| format!("truncated escape in {text:?}"))?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("invalid escape %{hex}"))?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "form value is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        let fields = decode_form("a=x%3Ay+z&b=&c").expect("valid form");
        assert_eq!(fields[0], ("a".to_owned(), "x:y z".to_owned()));
        assert_eq!(fields[1], ("b".to_owned(), String::new()));
        assert_eq!(fields[2], ("c".to_owned(), String::new()));
        assert!(decode_form("a=%zz").is_err());
    }
}
