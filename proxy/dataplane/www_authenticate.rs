//! Reading a `WWW-Authenticate` challenge (RFC 9110 §11.6.1) far enough to tell whether the
//! upstream refused our token: `Bearer` or `mtls_pop` with `error="invalid_token"`.

use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;

/// The schemes popgate presents tokens with.
const OUR_SCHEMES: [&str; 2] = ["bearer", "mtls_pop"];

/// True when any `WWW-Authenticate` header holds a `Bearer` or `mtls_pop` challenge whose
/// `error` parameter is `invalid_token` (quoted or not).
pub fn refuses_token(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            challenges(value).iter().any(|c| {
                OUR_SCHEMES.iter().any(|s| c.scheme.eq_ignore_ascii_case(s))
                    && c.params
                        .iter()
                        .any(|(k, v)| k.eq_ignore_ascii_case("error") && v == "invalid_token")
            })
        })
}

/// One challenge: scheme and auth-params (token68 forms carry no params).
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

/// A byte cursor over one header value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] == b' ' || self.s[self.i] == b'\t') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn token(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        // Every tchar is ASCII, so the slice is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    /// A quoted-string after its opening quote, with `\` escapes removed.
    fn quoted(&mut self) -> Option<String> {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let escaped = self.peek()?;
                    self.i += 1;
                    out.push(escaped);
                }
                _ => out.push(b),
            }
        }
        None
    }
}

/// Parses a header value into challenges; malformed tails end the parse (what was read is kept).
fn challenges(value: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        c.skip_ws();
        while c.peek() == Some(b',') {
            c.i += 1;
            c.skip_ws();
        }
        if c.peek().is_none() {
            return out;
        }
        let name = c.token();
        if name.is_empty() {
            return out;
        }
        c.skip_ws();
        if c.peek() == Some(b'=') && !out.is_empty() {
            // `name=value`: a parameter of the current challenge.
            c.i += 1;
            c.skip_ws();
            let value = if c.peek() == Some(b'"') {
                c.i += 1;
                match c.quoted() {
                    Some(v) => v,
                    None => return out,
                }
            } else {
                c.token().to_string()
            };
            if let Some(last) = out.last_mut() {
                last.params.push((name.to_ascii_lowercase(), value));
            }
            c.skip_ws();
            match c.peek() {
                Some(b',') | None => continue,
                _ => return out,
            }
        }
        // A new challenge: `scheme [token68 | params]`.
        out.push(Challenge {
            scheme: name.to_string(),
            params: Vec::new(),
        });
        c.skip_ws();
        skip_token68(&mut c);
    }
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

/// After a scheme: consumes a token68 (`abc==`) when one stands alone before `,` or the end;
/// otherwise leaves the cursor where it was (auth-params follow).
fn skip_token68(c: &mut Cursor<'_>) {
    let start = c.i;
    while c.peek().is_some_and(is_token68_char) {
        c.i += 1;
    }
    if c.i == start {
        return;
    }
    while c.peek() == Some(b'=') {
        c.i += 1;
    }
    c.skip_ws();
    if !matches!(c.peek(), None | Some(b',')) {
        c.i = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn refuses(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        refuses_token(&headers)
    }

    #[test]
    fn recognises_invalid_token_for_our_schemes() {
        assert!(refuses(&[r#"Bearer error="invalid_token""#]));
        assert!(refuses(&[
            r#"mtls_pop realm="x", error="invalid_token", error_description="the token has expired""#
        ]));
        assert!(refuses(&[r#"bearer error=invalid_token"#]));
        assert!(refuses(&[r#"MTLS_POP ERROR = "invalid_token""#]));
        // Several challenges in one value, and in several headers.
        assert!(refuses(&[
            r#"Basic realm="a", Bearer realm="b", error="invalid_token""#
        ]));
        assert!(refuses(&[
            r#"Basic realm="a""#,
            r#"Bearer error="invalid_token""#
        ]));
        // Escapes inside quoted strings.
        assert!(refuses(&[
            r#"Bearer error_description="say \"hi\", ok", error="invalid_token""#
        ]));
    }

    #[test]
    fn other_errors_schemes_and_garbage_are_not_refusals() {
        assert!(!refuses(&[]));
        assert!(!refuses(&[r#"Bearer error="insufficient_scope""#]));
        assert!(!refuses(&[r#"Basic error="invalid_token""#]));
        // The parameter belongs to Basic, the second challenge has none.
        assert!(!refuses(&[
            r#"Basic error="invalid_token", Bearer realm="x""#
        ]));
        // Inside another parameter's quoted value.
        assert!(!refuses(&[
            r#"Bearer error_description="error=invalid_token""#
        ]));
        assert!(!refuses(&[r#"Bearer error="invalid_token"#]));
        assert!(!refuses(&[r#"Negotiate abc=="#]));
        assert!(!refuses(&["=,,=="]));
        assert!(!refuses(&[r#"Bearer error="invalid_tokenx""#]));
    }

    #[test]
    fn parses_token68_and_params() {
        assert_eq!(
            challenges(r#"Negotiate YWJj==, Bearer error="invalid_token""#),
            vec![
                Challenge {
                    scheme: "Negotiate".into(),
                    params: vec![]
                },
                Challenge {
                    scheme: "Bearer".into(),
                    params: vec![("error".into(), "invalid_token".into())]
                },
            ]
        );
    }
}
