//! The response head: the status line and header fields, parsed by `httparse` from the
//! connection's read buffer into `http` types whose values share the buffer (no copy).

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Version};

use super::{MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS};

/// Header fields popgate may add to an answer before passing it on.
const ADDED_FIELDS: usize = 4;

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    /// HTTP/1.1 or HTTP/1.0.
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

/// Why a response head was refused. The upstream's bytes are never echoed (a head can carry a
/// token or a cookie); only what is wrong and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HeadError {
    #[error("the response head is longer than {MAX_RESPONSE_HEAD} bytes")]
    TooLong,
    #[error("the response head has more than {MAX_RESPONSE_HEADERS} header fields")]
    TooManyFields,
    #[error("the response head is malformed ({0})")]
    Malformed(&'static str),
    #[error("header field {index} of the response has an invalid name")]
    BadName { index: usize },
    #[error("header field {name} of the response has an invalid value")]
    BadValue { name: HeaderName },
}

/// Takes a complete response head off the front of `buf`: `Ok(None)` while it is incomplete
/// (read more, unless `buf` already holds [`MAX_RESPONSE_HEAD`] bytes: then it is an error).
/// Empty lines before the status line are skipped, as RFC 9112 §2.2 lets a client do.
pub(crate) fn take(buf: &mut BytesMut) -> Result<Option<ResponseHead>, HeadError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Left uninitialised: httparse writes the ones it uses (3.2 KB of zeroes saved per head).
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_RESPONSE_HEAD {
                Err(HeadError::TooLong)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(error) => return Err(HeadError::Malformed(what(error))),
    };
    if len > MAX_RESPONSE_HEAD {
        return Err(HeadError::TooLong);
    }
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Malformed("HTTP version")),
    };
    let code = parsed.code.ok_or(HeadError::Malformed("status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Malformed("status code"))?;
    // Offsets into the buffer of each field, so that the values can share its bytes once it is
    // frozen (the parsed slices borrow it).
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(parsed.headers.len());
    for (index, field) in parsed.headers.iter().enumerate() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::BadName { index })?;
        let start = field.value.as_ptr() as usize - base;
        spans.push((name, start, start + field.value.len()));
    }
    let head = buf.split_to(len).freeze();
    // Room for the fields popgate adds to the answer (request id, ...) without a rehash.
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_FIELDS);
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| HeadError::BadValue { name: name.clone() })?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
    }))
}

/// The part of the head `httparse` refused (never its bytes).
fn what(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "a header name",
        httparse::Error::HeaderValue => "a header value",
        httparse::Error::NewLine => "a line ending",
        httparse::Error::Status => "the status code",
        httparse::Error::Version => "the HTTP version",
        _ => "the status line",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
        take(&mut BytesMut::from(raw))
    }

    #[test]
    fn a_head_is_taken_off_the_buffer_and_the_body_stays() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"[..],
        );
        let head = take(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["content-length"], "5");
        let both: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(both, ["1", "2"]);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_until_the_limit() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        let mut long = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        long.resize(MAX_RESPONSE_HEAD, b'a');
        assert_eq!(parse(&long).unwrap_err(), HeadError::TooLong);
        // One byte under the limit is still only incomplete.
        long.truncate(MAX_RESPONSE_HEAD - 1);
        assert!(parse(&long).unwrap().is_none());
    }

    #[test]
    fn a_complete_head_one_byte_over_the_limit_is_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        let end = b"\r\n\r\n";
        raw.resize(MAX_RESPONSE_HEAD + 1 - end.len(), b'a');
        raw.extend_from_slice(end);
        assert_eq!(raw.len(), MAX_RESPONSE_HEAD + 1);
        assert_eq!(parse(&raw).unwrap_err(), HeadError::TooLong);
        raw.remove(30);
        assert!(parse(&raw).unwrap().is_some());
    }

    #[test]
    fn too_many_fields_are_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(parse(&raw).unwrap_err(), HeadError::TooManyFields);
    }

    #[test]
    fn malformed_heads_are_refused_without_echoing_them() {
        for raw in [
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            // Obsolete line folding (RFC 9112 §5.2: a client may refuse it).
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n",
            // A space before the colon (RFC 9112 §5.1: must be refused).
            b"HTTP/1.1 200 OK\r\nx-a : 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\rx-b: 2\r\n\r\n",
        ] {
            let error = parse(raw).unwrap_err();
            assert!(
                matches!(error, HeadError::Malformed(_)),
                "{:?}: {error:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let secret = parse(b"HTTP/1.1 200 OK\r\nx-token: sec\x01ret\r\n\r\n").unwrap_err();
        assert!(!secret.to_string().contains("sec"), "{secret}");
    }

    #[test]
    fn empty_lines_before_the_status_line_are_skipped() {
        let head = parse(b"\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::NO_CONTENT);
    }

    #[test]
    fn http_1_0_is_read_as_such() {
        let head = parse(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.version, Version::HTTP_10);
        assert_eq!(head.status, StatusCode::NOT_FOUND);
    }
}
