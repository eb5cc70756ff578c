//! How a response body is delimited (RFC 9112 §6.3), and whether its connection may carry
//! another request after it.

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Version};

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body: an answer to `HEAD`, a `204` or a `304` (1xx heads are interim, see
    /// [`Interim`]).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunks ([`super::chunked`]), ending with a zero-size chunk and optional trailers.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// What to do with a response head before its framing matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interim {
    /// A final response.
    Final,
    /// `100 Continue`, `102`, `103 Early Hints`: read the next head (their fields are not passed
    /// on: the caller gets the final answer only).
    Skip,
}

/// Why a response's framing was refused: each could let popgate and the upstream disagree on
/// where the body ends, and hand the rest to the next request on the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FramingError {
    #[error("the upstream switched protocols (101) although popgate asked for no upgrade")]
    UnaskedUpgrade,
    #[error("the response has both Transfer-Encoding and Content-Length")]
    LengthAndCoding,
    #[error("the response has a Transfer-Encoding other than chunked")]
    UnsupportedCoding,
    #[error("an HTTP/1.0 response has a Transfer-Encoding")]
    CodingInHttp10,
    #[error("the response's Content-Length is not one number")]
    BadLength,
}

/// Whether `status` is an interim response to skip, or a final one; `101` is refused (popgate
/// never asks the upstream to switch protocols).
pub(crate) fn interim(status: StatusCode) -> Result<Interim, FramingError> {
    match status.as_u16() {
        101 => Err(FramingError::UnaskedUpgrade),
        100..=199 => Ok(Interim::Skip),
        _ => Ok(Interim::Final),
    }
}

/// The body framing of a final response to a `method` request, and whether the connection may
/// be reused once that body has been read to its end.
pub(crate) fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<(BodyFraming, bool), FramingError> {
    let persistent = version == Version::HTTP_11 && !asks_to_close(headers);
    // RFC 9112 §6.3 items 1: no body whatever the fields say.
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyFraming::Empty, persistent));
    }
    let coded = headers.contains_key(TRANSFER_ENCODING);
    let length = headers.contains_key(CONTENT_LENGTH);
    if coded {
        if version != Version::HTTP_11 {
            return Err(FramingError::CodingInHttp10);
        }
        if length {
            return Err(FramingError::LengthAndCoding);
        }
        if !only_chunked(headers) {
            return Err(FramingError::UnsupportedCoding);
        }
        return Ok((BodyFraming::Chunked, persistent));
    }
    if length {
        let n = declared_length(headers).ok_or(FramingError::BadLength)?;
        return Ok((BodyFraming::Length(n), persistent));
    }
    Ok((BodyFraming::UntilClose, false))
}

/// `Connection: close` among the connection options.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|option| trim(option).eq_ignore_ascii_case(b"close"))
}

/// The transfer codings are exactly `chunked`, once.
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(trim);
    matches!(codings.next(), Some(c) if c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// The one length `Content-Length` declares: digits only, every value alike.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut declared = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = digits(trim(part))?;
            if declared.is_some_and(|d| d != n) {
                return None;
            }
            declared = Some(n);
        }
    }
    declared
}

fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn v(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, v(value));
        }
        map
    }

    fn get(fields: &[(&'static str, &'static str)]) -> Result<(BodyFraming, bool), FramingError> {
        framing(
            &Method::GET,
            StatusCode::OK,
            Version::HTTP_11,
            &headers(fields),
        )
    }

    #[test]
    fn lengths_chunks_and_the_close() {
        assert_eq!(
            get(&[("content-length", "12")]),
            Ok((BodyFraming::Length(12), true))
        );
        assert_eq!(
            get(&[("content-length", "12"), ("content-length", "12, 12")]),
            Ok((BodyFraming::Length(12), true))
        );
        assert_eq!(
            get(&[("transfer-encoding", "Chunked")]),
            Ok((BodyFraming::Chunked, true))
        );
        assert_eq!(get(&[]), Ok((BodyFraming::UntilClose, false)));
        assert_eq!(
            get(&[("content-length", "0"), ("connection", "keep-alive, Close")]),
            Ok((BodyFraming::Length(0), false))
        );
    }

    #[test]
    fn no_body_whatever_the_fields_say() {
        let fields = headers(&[("content-length", "99")]);
        for (method, status) in [
            (Method::HEAD, StatusCode::OK),
            (Method::GET, StatusCode::NO_CONTENT),
            (Method::GET, StatusCode::NOT_MODIFIED),
        ] {
            assert_eq!(
                framing(&method, status, Version::HTTP_11, &fields),
                Ok((BodyFraming::Empty, true))
            );
        }
    }

    #[test]
    fn http_1_0_is_never_reused() {
        let fields = headers(&[("content-length", "3"), ("connection", "keep-alive")]);
        assert_eq!(
            framing(&Method::GET, StatusCode::OK, Version::HTTP_10, &fields),
            Ok((BodyFraming::Length(3), false))
        );
        let coded = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            framing(&Method::GET, StatusCode::OK, Version::HTTP_10, &coded),
            Err(FramingError::CodingInHttp10)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            get(&[("transfer-encoding", "chunked"), ("content-length", "5")]),
            Err(FramingError::LengthAndCoding)
        );
        for coding in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "chunked;q=1",
            "",
        ] {
            let fields =
                HeaderMap::from_iter([(TRANSFER_ENCODING, HeaderValue::from_static(coding))]);
            assert_eq!(
                framing(&Method::GET, StatusCode::OK, Version::HTTP_11, &fields),
                Err(FramingError::UnsupportedCoding),
                "{coding:?}"
            );
        }
        for length in [
            "",
            "-1",
            "+5",
            "5 5",
            "0x10",
            "99999999999999999999",
            "5, 6",
        ] {
            let fields = HeaderMap::from_iter([(CONTENT_LENGTH, HeaderValue::from_static(length))]);
            assert_eq!(
                framing(&Method::GET, StatusCode::OK, Version::HTTP_11, &fields),
                Err(FramingError::BadLength),
                "{length:?}"
            );
        }
        assert_eq!(
            get(&[("content-length", "5"), ("content-length", "6")]),
            Err(FramingError::BadLength)
        );
    }

    #[test]
    fn interim_heads_are_skipped_and_an_upgrade_refused() {
        assert_eq!(interim(StatusCode::CONTINUE), Ok(Interim::Skip));
        assert_eq!(
            interim(StatusCode::from_u16(103).unwrap()),
            Ok(Interim::Skip)
        );
        assert_eq!(
            interim(StatusCode::SWITCHING_PROTOCOLS),
            Err(FramingError::UnaskedUpgrade)
        );
        assert_eq!(interim(StatusCode::OK), Ok(Interim::Final));
    }
}
