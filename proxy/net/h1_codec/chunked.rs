//! The chunked transfer coding of a response body (RFC 9112 §7.1), decoded from the
//! connection's read buffer as it fills: data handed on as it arrives (sharing the buffer's
//! bytes), the trailer section parsed into a header map.
//!
//! Strict where leniency would let popgate and the upstream disagree on where the body ends: a
//! chunk size is 1–16 hex digits, its line ends in CRLF (a bare CR or LF is an error), its
//! extensions are skipped but may hold no control characters, and a chunk's data must be
//! followed by CRLF. The trailer section is parsed as a head is (`httparse`).

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The longest chunk-size line (size, extensions, CRLF). Extensions carry nothing popgate uses;
/// hyper allows 16 KiB of them per body, a real upstream sends none.
const MAX_SIZE_LINE: usize = 4 * 1024;

/// Hex digits of a chunk size: 16 make a `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// The longest trailer section, and its most fields: as for a response head
/// ([`super::MAX_RESPONSE_HEAD`], [`super::MAX_RESPONSE_HEADERS`]).
const MAX_TRAILERS: usize = super::MAX_RESPONSE_HEAD;
const MAX_TRAILER_FIELDS: usize = super::MAX_RESPONSE_HEADERS;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last (zero-size) chunk: the trailer section and the final CRLF.
    Trailers,
    /// The body has ended.
    Done,
}

/// A chunked body's decoder.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
}

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The trailer section (never empty); the body has ended.
    Trailers(HeaderMap),
    /// The body has ended (no trailers).
    End,
    /// Read more into the buffer, then call again.
    NeedMore,
}

/// Why a chunked body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ChunkError {
    #[error("a chunk-size line of the response body is malformed")]
    SizeLine,
    #[error("a chunk-size line of the response body is longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    #[error("a chunk of the response body is not followed by CRLF")]
    DataEnd,
    #[error("the response's trailer section is malformed")]
    Trailers,
    #[error(
        "the response's trailer section is longer than {MAX_TRAILERS} bytes or has more than {MAX_TRAILER_FIELDS} fields"
    )]
    TrailersTooLarge,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        Self { state: State::Size }
    }

    /// Decodes what `buf` holds from its front, taking off what it used.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Size => match size_line(buf)? {
                    None => return Ok(Decoded::NeedMore),
                    Some((used, 0)) => {
                        let _ = buf.split_to(used);
                        self.state = State::Trailers;
                    }
                    Some((used, size)) => {
                        let _ = buf.split_to(used);
                        self.state = State::Data(size);
                    }
                },
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => match &buf[..buf.len().min(2)] {
                    [b'\r', b'\n'] => {
                        let _ = buf.split_to(2);
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(Decoded::NeedMore),
                    _ => return Err(ChunkError::DataEnd),
                },
                State::Trailers => {
                    return match trailers(buf)? {
                        None => Ok(Decoded::NeedMore),
                        Some(map) => {
                            self.state = State::Done;
                            Ok(if map.is_empty() {
                                Decoded::End
                            } else {
                                Decoded::Trailers(map)
                            })
                        }
                    };
                }
                State::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// A chunk-size line at the front of `buf`: `(bytes it takes, size)`, or `None` while its CRLF
/// has not arrived.
fn size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, ChunkError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > MAX_SIZE_DIGITS {
        return Err(ChunkError::SizeLine);
    }
    if digits == buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err(ChunkError::SizeLine);
    }
    // ASCII hex digits, at most 16: valid UTF-8 and no overflow, so neither error can happen.
    let size = std::str::from_utf8(&buf[..digits])
        .ok()
        .and_then(|digits| u64::from_str_radix(digits, 16).ok())
        .ok_or(ChunkError::SizeLine)?;
    // Then optional whitespace and `;extensions`, up to the CRLF.
    let rest = &buf[digits..];
    if !matches!(rest[0], b' ' | b'\t' | b';' | b'\r') {
        return Err(ChunkError::SizeLine);
    }
    for (at, &b) in rest.iter().enumerate() {
        // The line's length if it ended right after this byte with CRLF (or, for a CR, with it).
        let line = digits + at + if b == b'\r' { 2 } else { 3 };
        if line > MAX_SIZE_LINE {
            return Err(ChunkError::SizeLineTooLong);
        }
        match b {
            b'\r' => {
                return match rest.get(at + 1) {
                    Some(b'\n') => Ok(Some((line, size))),
                    Some(_) => Err(ChunkError::SizeLine),
                    None => Ok(None),
                };
            }
            b'\t' => {}
            0..=0x1f | 0x7f => return Err(ChunkError::SizeLine),
            _ => {}
        }
    }
    Ok(None)
}

/// The trailer section and its final CRLF at the front of `buf`, taken off it; `None` while it
/// is incomplete.
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, ChunkError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let (used, map) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((used, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for field in fields.iter() {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| ChunkError::Trailers)?;
                let value =
                    HeaderValue::from_bytes(field.value).map_err(|_| ChunkError::Trailers)?;
                map.append(name, value);
            }
            (used, map)
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Err(ChunkError::TrailersTooLarge);
        }
        Err(_) => return Err(ChunkError::Trailers),
    };
    if used > MAX_TRAILERS {
        return Err(ChunkError::TrailersTooLarge);
    }
    let _ = buf.split_to(used);
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded body: its data, its trailers, and the bytes after it.
    type Body = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes `input` fed in pieces of `step` bytes: the data, the trailers, and whatever the
    /// buffer holds after the body.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<Body, ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut data = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => {
                    assert!(!bytes.is_empty());
                    data.extend_from_slice(&bytes);
                }
                end @ (Decoded::Trailers(_) | Decoded::End) => {
                    // What follows the body: in the buffer, or not fed yet.
                    let mut after = buf.to_vec();
                    after.extend_from_slice(&input[fed..]);
                    let trailers = match end {
                        Decoded::Trailers(map) => Some(map),
                        _ => None,
                    };
                    return Ok((data, trailers, after));
                }
                Decoded::NeedMore => {
                    assert!(fed < input.len(), "needs more after the whole input");
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    fn every_split(input: &[u8]) -> Result<Body, ChunkError> {
        let whole = decode_in_steps(input, input.len().max(1));
        for step in 1..input.len().min(16) {
            assert_eq!(decode_in_steps(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn chunks_decode_to_the_body_in_any_split() {
        let (data, trailers, after) = every_split(
            b"5\r\nhello\r\n1;ext=\"v\"\r\n \r\nA \t; x\r\n0123456789\r\n0\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(data, b"hello 0123456789");
        assert_eq!(trailers, None);
        assert_eq!(
            after, b"NEXT",
            "the next response's bytes stay in the buffer"
        );
    }

    #[test]
    fn trailers_end_the_body() {
        let (data, trailers, after) =
            every_split(b"3\r\nabc\r\n0\r\nx-sum: 1\r\nX-Sum: 2\r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        let trailers = trailers.unwrap();
        let sums: Vec<_> = trailers.get_all("x-sum").iter().collect();
        assert_eq!(sums, ["1", "2"]);
        assert!(after.is_empty());
    }

    #[test]
    fn a_large_chunk_is_handed_on_as_it_arrives() {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"100000\r\nabc"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::NeedMore);
        assert_ne!(decoder.state, State::Done);
    }

    #[test]
    fn malformed_framing_is_refused() {
        for (input, error) in [
            (&b"x\r\n"[..], ChunkError::SizeLine),
            (b"\r\n", ChunkError::SizeLine),
            (b";ext\r\n", ChunkError::SizeLine),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::SizeLine),
            (b"5\rhello", ChunkError::SizeLine),
            (b"5x\r\n", ChunkError::SizeLine),
            (b"5;a\x01b\r\n", ChunkError::SizeLine),
            (b"-5\r\n", ChunkError::SizeLine),
            (b"+5\r\n", ChunkError::SizeLine),
            (b"0x5\r\n", ChunkError::SizeLine),
            // 17 digits: past a u64, even when its value would fit.
            (b"00000000000000005\r\n", ChunkError::SizeLine),
            (b"5\r\nhelloXY", ChunkError::DataEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::DataEnd),
            (b"0\r\nx-a 1\r\n\r\n", ChunkError::Trailers),
            (b"0\r\nx a: 1\r\n\r\n", ChunkError::Trailers),
        ] {
            assert_eq!(
                decode_in_steps(input, input.len()).unwrap_err(),
                error,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The trailer section is parsed like a head: a bare LF ends a line there, as RFC 9112 §2.2
    /// lets a recipient read it (and as hyper's parser does); chunk-size lines and the CRLF after
    /// a chunk's data are held to CRLF.
    #[test]
    fn a_bare_lf_ends_a_trailer_line() {
        let (_, trailers, _) = every_split(b"0\r\nx-a: 1\n\n").unwrap();
        assert_eq!(trailers.unwrap()["x-a"], "1");
    }

    #[test]
    fn sixteen_digits_are_the_most_a_size_has() {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"FFFFFFFFFFFFFFFF\r\nab"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"ab"))
        );
        assert_eq!(decoder.state, State::Data(u64::MAX - 2));
    }

    #[test]
    fn a_size_line_one_byte_over_the_limit_is_refused() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_SIZE_LINE - 2, b'e');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_SIZE_LINE);
        let mut ok = line.clone();
        ok.extend_from_slice(b"hello\r\n0\r\n\r\n");
        assert_eq!(every_split(&ok).unwrap().0, b"hello");
        line.insert(3, b'e');
        assert_eq!(
            decode_in_steps(&line, line.len()).unwrap_err(),
            ChunkError::SizeLineTooLong
        );
        // Never ending: refused once the limit is passed, not read for ever.
        let endless = vec![b'e'; MAX_SIZE_LINE * 2];
        let mut input = b"5;".to_vec();
        input.extend_from_slice(&endless);
        assert_eq!(
            decode_in_steps(&input, 100).unwrap_err(),
            ChunkError::SizeLineTooLong
        );
    }

    #[test]
    fn a_trailer_section_past_its_limits_is_refused() {
        let mut input = b"0\r\nx-pad: ".to_vec();
        input.resize(3 + MAX_TRAILERS + 1, b'a');
        assert_eq!(
            decode_in_steps(&input, 512).unwrap_err(),
            ChunkError::TrailersTooLarge
        );
        let mut many = b"0\r\n".to_vec();
        for i in 0..=MAX_TRAILER_FIELDS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            decode_in_steps(&many, many.len()).unwrap_err(),
            ChunkError::TrailersTooLarge
        );
    }
}
