//! The HTTP/1 framing guard against httparse (hyper's parser) on the same bytes: a pipelined
//! request stream, fed to the guard in two reads split at a fuzzed point. It fails when they
//! disagree on framing in a way that matters:
//!
//! - httparse parses a complete head whose framing is ambiguous or unreadable (Content-Length with
//!   Transfer-Encoding, Content-Length twice or not digits, a final coding other than chunked, a
//!   chunked body hyper's decoder refuses, trailers hyper would read past a blank line) and the
//!   guard refused neither it nor an earlier request: smuggling;
//! - the guard refuses a request httparse parses cleanly with unambiguous framing and a head
//!   within the limit: a caller wrongly refused;
//! - neither refuses anything, yet they count a different number of complete heads: they
//!   disagree on where a body ends, which is exactly what smuggling exploits.
//!
//! Once httparse rejects a head (hyper answers 400 and closes) nothing after it is compared.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popgate::dataplane::{Followed, follow};

/// A small head limit, so fuzzed inputs reach it.
const MAX_HEAD: usize = 8 * 1024;
/// hyper's default header-line cap.
const MAX_HEADERS: usize = 100;

/// What the reference found at request `index`.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Every complete request framed cleanly; `heads` complete heads.
    Clean { heads: u64 },
    /// Request `index` has ambiguous or unreadable framing (the guard must refuse it, or earlier).
    Ambiguous { index: u64 },
    /// Request `index`'s head is over the limit (the guard must refuse it with 431, or earlier).
    TooLarge { index: u64 },
    /// httparse rejects request `index`: hyper answers 400; nothing from here on is compared.
    Rejected { index: u64 },
}

/// The guard's longest chunk-size line (`MAX_CHUNK_LINE_BYTES`): a longer one is refused (400)
/// by policy, though hyper allows 16 KiB of extensions per body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why a body is not followed to its end.
enum BodyError {
    /// hyper's decoder refuses it, or the guard refuses it by policy (a long chunk line, a bare
    /// LF or lone CR in trailers).
    Bad,
    /// Its trailers are over the head limit.
    TooLarge,
}

/// Where a body framed by `framing` ends in `buf`, `Ok(None)` when it does not end in `buf`.
///
/// Chunked bodies follow hyper 1.x's decoder (`proto/h1/decode.rs`), not httparse alone: the
/// chunk-size line is `parse_chunk_size`'s grammar (hyper's, but at most 16 digits) and must
/// start with a hex digit (`read_start` refuses at once); chunk data must be followed by exactly
/// CRLF (`read_body_cr`/`read_body_lf`: a bare LF is refused); a trailer line ends only at CRLF
/// (`read_trailer`: a bare LF is part of the line, so hyper would read on past a following blank
/// line). A complete line is judged; an unfinished one only by its first byte.
fn body_end(buf: &[u8], framing: Framing) -> Result<Option<usize>, BodyError> {
    match framing {
        Framing::None => Ok(Some(0)),
        Framing::Length(n) => Ok(usize::try_from(n).ok().filter(|n| *n <= buf.len())),
        Framing::Chunked => {
            let mut at = 0;
            loop {
                let rest = &buf[at..];
                if rest.is_empty() {
                    return Ok(None);
                }
                if !rest[0].is_ascii_hexdigit() {
                    return Err(BodyError::Bad);
                }
                let eol = rest.iter().position(|&b| b == b'\n');
                if eol.unwrap_or(rest.len()) > MAX_CHUNK_LINE {
                    return Err(BodyError::Bad);
                }
                let Some(eol) = eol else {
                    return Ok(None);
                };
                let size = match httparse::parse_chunk_size(&rest[..=eol]) {
                    Ok(httparse::Status::Complete((_, size))) => size,
                    _ => return Err(BodyError::Bad),
                };
                at += eol + 1;
                if size == 0 {
                    return trailers_end(&buf[at..]).map(|end| end.map(|n| at + n));
                }
                let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
                    return Ok(None);
                };
                if buf.len() <= end {
                    return Ok(None);
                }
                let tail = &buf[end..buf.len().min(end + 2)];
                if !b"\r\n".starts_with(tail) {
                    return Err(BodyError::Bad);
                }
                if tail.len() < 2 {
                    return Ok(None);
                }
                at = end + 2;
            }
        }
    }
}

/// Where the trailer section (after the last chunk's size line) ends in `buf`.
fn trailers_end(buf: &[u8]) -> Result<Option<usize>, BodyError> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
            return if at + rest.len() > MAX_HEAD {
                Err(BodyError::TooLarge)
            } else {
                Ok(None)
            };
        };
        at += eol + 1;
        if at > MAX_HEAD {
            return Err(BodyError::TooLarge);
        }
        let line = &rest[..=eol];
        let Some(text) = line.strip_suffix(b"\r\n") else {
            // A bare LF: hyper reads on as the same trailer line.
            return Err(BodyError::Bad);
        };
        if text.contains(&b'\r') {
            // A lone CR: hyper refuses it.
            return Err(BodyError::Bad);
        }
        if text.is_empty() {
            return Ok(Some(at));
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The reference: httparse request by request.
fn reference(input: &[u8]) -> Found {
    let mut at = 0;
    let mut index = 0u64;
    loop {
        let buf = &input[at..];
        if buf.is_empty() {
            return Found::Clean { heads: index };
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > MAX_HEAD {
                    Found::TooLarge { index }
                } else {
                    Found::Clean { heads: index }
                };
            }
            Err(_) => return Found::Rejected { index },
        };
        if head_len > MAX_HEAD {
            return Found::TooLarge { index };
        }
        if request.method.is_some_and(|m| m == "PRI") && index == 0 {
            // An h2 preface: not HTTP/1 (httparse rejects its version anyway).
            return Found::Rejected { index };
        }
        let mut lengths = 0;
        let mut length = None;
        let mut te: Option<bool> = None;
        for h in request.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = (!h.value.is_empty() && h.value.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(h.value).ok()?.parse::<u64>().ok())
                    .flatten();
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|&c| c == b',').next().unwrap_or(b"");
                let last = last.trim_ascii();
                te = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        }
        let framing = match (lengths, length, te) {
            (0, _, None) => Framing::None,
            (1, Some(n), None) => Framing::Length(n),
            (0, _, Some(true)) => Framing::Chunked,
            _ => return Found::Ambiguous { index },
        };
        at += head_len;
        match body_end(&input[at..], framing) {
            Err(BodyError::Bad) => return Found::Ambiguous { index },
            Err(BodyError::TooLarge) => return Found::TooLarge { index },
            Ok(None) => return Found::Clean { heads: index + 1 },
            Ok(Some(n)) => at += n,
        }
        index += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let guard: Followed = follow(input, usize::from(split) * input.len() / 256, MAX_HEAD);
    let refused_at = guard.refused.map(|(i, _)| i);
    match reference(input) {
        Found::Ambiguous { index } => assert!(
            refused_at.is_some_and(|i| i <= index),
            "httparse finds request {index} ambiguous; the guard refused {:?}",
            guard.refused
        ),
        Found::TooLarge { index } => assert!(
            refused_at.is_some_and(|i| i <= index),
            "request {index}'s head is over {MAX_HEAD}; the guard refused {:?}",
            guard.refused
        ),
        // hyper closes the connection at request `index`, so what the guard decides about later
        // bytes never takes effect; the requests before it were cleanly framed and must pass.
        Found::Rejected { index } => assert!(
            refused_at.is_none_or(|i| i >= index),
            "the guard refused {:?}, before request {index} that hyper rejects",
            guard.refused
        ),
        Found::Clean { heads } => {
            assert_eq!(
                guard.refused, None,
                "the guard refused a cleanly framed stream of {heads} requests"
            );
            assert_eq!(
                guard.heads, heads,
                "the guard and httparse disagree on where requests start"
            );
        }
    }
});
