//! The request head as written on the upstream connection: request line, the prepared header
//! fields, and the field that frames the body.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method};

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body, and no framing field (`upstream_body::declares_empty_length` says when).
    None,
    /// Exactly this many bytes (`content-length`), also 0 for a bodiless `POST` or `PUT`.
    Length(u64),
}

/// Writes the head of a `method` request for `target` (origin form, `/path?query`) with
/// `headers` to `out`. The framing fields among `headers` are not written: `framing` decides.
/// `http`'s types already refuse CR, LF and NUL in names, values and the target, so nothing the
/// caller sent can end a line early.
pub(crate) fn write(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    out.reserve(head_len(method, target, headers));
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            // `BytesMut` grows as it is written to: its `fmt::Write` cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
    }
    out.put_slice(b"\r\n");
}

/// The head's length without its framing field, to reserve once.
fn head_len(method: &Method, target: &str, headers: &HeaderMap) -> usize {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    method.as_str().len() + target.len() + 13 + fields + 32
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::net::h1_codec::chunked::{ChunkedDecoder, Decoded};

    // The chunked coding as a request body would be written, for the round trip through the
    // decoder (request bodies do not go through the codec yet).
    /// The chunk-size line of a chunk of `len` bytes (`len` > 0), in `out`.
    fn chunk_size_line(len: usize, out: &mut BytesMut) {
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        let mut n = len;
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        out.put_slice(&digits[at..]);
        out.put_slice(b"\r\n");
    }

    /// The last chunk and the trailer section (`trailers`, possibly empty), in `out`.
    fn last_chunk(trailers: Option<&HeaderMap>, out: &mut BytesMut) {
        out.put_slice(b"0\r\n");
        for (name, value) in trailers.into_iter().flatten() {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn the_head_is_the_request_line_the_fields_and_the_framing() {
        let fields = headers(&[
            ("host", "svc.example"),
            ("authorization", "PoP abc"),
            ("content-length", "999"),
            ("transfer-encoding", "gzip"),
        ]);
        let mut out = BytesMut::new();
        write(
            &Method::POST,
            "/a?b=c",
            &fields,
            RequestFraming::Length(12),
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"POST /a?b=c HTTP/1.1\r\nhost: svc.example\r\nauthorization: PoP abc\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = BytesMut::new();
        write(
            &Method::GET,
            "/",
            &HeaderMap::new(),
            RequestFraming::None,
            &mut out,
        );
        assert_eq!(&out[..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0, 7, 10, 12_345, u64::MAX] {
            let mut out = BytesMut::new();
            write(
                &Method::PUT,
                "/",
                &HeaderMap::new(),
                RequestFraming::Length(n),
                &mut out,
            );
            assert_eq!(
                &out[..],
                format!("PUT / HTTP/1.1\r\ncontent-length: {n}\r\n\r\n").as_bytes()
            );
        }
    }

    /// What the encoder writes, the decoder reads back: chunks of every size class and trailers.
    #[test]
    fn chunks_written_decode_back() {
        let mut out = BytesMut::new();
        let mut body = Vec::new();
        for len in [1usize, 15, 16, 255, 256, 4096, 65_537] {
            let chunk: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            chunk_size_line(len, &mut out);
            out.put_slice(&chunk);
            out.put_slice(b"\r\n");
            body.extend_from_slice(&chunk);
        }
        last_chunk(Some(&headers(&[("x-sum", "7")])), &mut out);
        let mut decoder = ChunkedDecoder::new();
        let mut got = Vec::new();
        loop {
            match decoder.decode(&mut out).unwrap() {
                Decoded::Data(d) => got.extend_from_slice(&d),
                Decoded::Trailers(t) => {
                    assert_eq!(t["x-sum"], "7");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, body);
        assert!(out.is_empty());
    }
}
