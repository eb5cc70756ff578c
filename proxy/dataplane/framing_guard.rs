//! An HTTP/1 framing guard: follows a caller connection's request framing as the bytes arrive,
//! before hyper parses them, and remembers the first request whose framing is ambiguous.
//!
//! Why: hyper is lenient where a proxy should not be. A request with both `Content-Length` and
//! `Transfer-Encoding` is parsed as chunked with the length dropped (RFC 9112 §6.1 allows that,
//! but the issue asks for a refusal), and repeated equal `Content-Length` lines are merged; the
//! request the service then sees no longer shows either. The guard sees the raw head, so the
//! service can refuse such a request (400, connection closed) before anything is forwarded. It
//! also catches an invalid chunk-size line that arrives together with the head, and a chunked
//! body that grows past the listener's body limit, which it cuts off.
//!
//! The guard only observes: it never changes a byte hyper reads, except to stop the stream when a
//! chunked body exceeds its limit. It never stops watching an HTTP/1 connection while hyper might
//! still serve requests on it: whatever it cannot follow (a head larger than its limit, however
//! padded; a chunk line too long to keep; a framing header it cannot read) flags that request, so
//! the service refuses it (431 or 400, connection closed) if hyper has not already. hyper's own
//! limits are soft (its read buffer can overshoot `max_buf_size`), so the guard's are the hard
//! ones. Only an HTTP/2 preface at the start of the connection turns it off: that connection is
//! never HTTP/1.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::find_byte::find_byte;
use super::limits::{LimitRefusal, framing};
use super::progress::BodyDue;

/// Longest chunk-size line followed: far above what any client sends as chunk extensions
/// (usually none), and a longer one is refused (400) rather than buffered.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Marks "no request flagged".
const NONE: u64 = u64::MAX;

/// What the guard found, shared with the connection's service.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// Index (0-based, in arrival order) of the first flagged request on the connection.
    first_flagged: AtomicU64,
    /// Which refusal (index into [`Flag`]).
    flag: AtomicU64,
    /// The body limit, for the 413 message.
    max_body: u64,
    /// The head limit, for the 431 message.
    max_head: usize,
}

/// Why a request was flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
enum Flag {
    ClAndTe = 0,
    DuplicateCl = 1,
    BadChunk = 2,
    BodyTooLarge = 3,
    HeadTooLarge = 4,
    Unfollowable = 5,
}

impl Verdict {
    fn new(max_head: usize, max_body: Option<u64>) -> Self {
        Self {
            first_flagged: AtomicU64::new(NONE),
            flag: AtomicU64::new(0),
            max_body: max_body.unwrap_or(u64::MAX),
            max_head,
        }
    }

    fn set(&self, request: u64, flag: Flag) {
        // Keep the first: later requests on the connection are never served anyway.
        if self
            .first_flagged
            .compare_exchange(NONE, request, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.flag.store(flag as u64, Ordering::Release);
        }
    }

    /// The refusal for the `request`-th request on this connection (0-based), if the guard
    /// flagged it or an earlier one. hyper serves HTTP/1 requests in order and closes after a
    /// flagged one, so the service's count and the guard's agree.
    pub(crate) fn refusal(&self, request: u64) -> Option<LimitRefusal> {
        let first = self.first_flagged.load(Ordering::Acquire);
        if first == NONE || request < first {
            return None;
        }
        Some(match self.flag.load(Ordering::Acquire) {
            0 => LimitRefusal::AmbiguousFraming {
                reason: framing::CL_AND_TE,
            },
            1 => LimitRefusal::AmbiguousFraming {
                reason: framing::DUPLICATE_CL,
            },
            2 => LimitRefusal::AmbiguousFraming {
                reason: framing::BAD_CHUNK,
            },
            3 => LimitRefusal::BodyTooLarge { max: self.max_body },
            4 => LimitRefusal::HeadTooLarge { max: self.max_head },
            _ => LimitRefusal::AmbiguousFraming {
                reason: framing::UNFOLLOWABLE,
            },
        })
    }
}

/// Where in the request stream the tracker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head (bytes kept in `line`/`head` buffers).
    Head,
    /// Inside a `Content-Length` body: bytes left.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside chunk data: bytes left.
    ChunkData(u64),
    /// After chunk data: expecting CRLF.
    ChunkDataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// Not following any more: an HTTP/2 connection, or a request was flagged (it and every
    /// later one on the connection are refused, and the connection closes).
    Off,
}

/// Follows request framing byte by byte.
#[derive(Debug)]
struct Tracker {
    state: State,
    /// The current line (head or chunk line), without its `\n`.
    line: Vec<u8>,
    /// Head so far: whether the request line was seen, the framing headers counted.
    saw_request_line: bool,
    content_lengths: u32,
    content_length: Option<u64>,
    transfer_encoding: Option<bool>,
    /// Bytes in the head so far (bounded by `max_head`).
    head_bytes: usize,
    max_head: usize,
    /// Requests whose head is complete.
    heads: u64,
    /// Chunked body bytes of the current request.
    body_bytes: u64,
    max_body: Option<u64>,
}

/// What one byte run did.
enum Step {
    /// Keep going.
    Continue,
    /// The body limit was passed at this offset in the run.
    CutAt(usize),
}

impl Tracker {
    fn new(max_head: usize, max_body: Option<u64>) -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            saw_request_line: false,
            content_lengths: 0,
            content_length: None,
            transfer_encoding: None,
            head_bytes: 0,
            max_head,
            heads: 0,
            body_bytes: 0,
            max_body,
        }
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.line = Vec::new();
    }

    /// Flags the request in progress and stops: it and all later ones are refused.
    fn flag(&mut self, verdict: &Verdict, flag: Flag) {
        // In a head, the request in progress is the next one; in a body, the last complete head.
        let request = if self.state == State::Head {
            self.heads
        } else {
            self.heads.saturating_sub(1)
        };
        verdict.set(request, flag);
        self.off();
    }

    /// Feeds newly read bytes.
    fn feed(&mut self, bytes: &[u8], verdict: &Verdict) -> Step {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Off => return Step::Continue,
                State::Fixed(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        State::Head
                    } else {
                        State::Fixed(left - take)
                    };
                }
                State::ChunkData(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    self.body_bytes = self.body_bytes.saturating_add(take);
                    if let Some(max) = self.max_body
                        && self.body_bytes > max
                    {
                        self.flag(verdict, Flag::BodyTooLarge);
                        let over = (self.body_bytes - max) as usize;
                        return Step::CutAt(i + take as usize - over);
                    }
                    i += take as usize;
                    self.state = if take == left {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left - take)
                    };
                }
                State::Head | State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    // Take up to the next line end in one go.
                    let rest = &bytes[i..];
                    let newline = find_byte(rest, b'\n');
                    let piece = &rest[..newline.unwrap_or(rest.len())];
                    let consumed = piece.len() + usize::from(newline.is_some());
                    if self.refuses_at_once(&rest[..consumed]) {
                        self.flag(verdict, Flag::BadChunk);
                        return Step::Continue;
                    }
                    i += consumed;
                    if matches!(self.state, State::Head | State::Trailers) {
                        // Blank lines before the request line count: hyper buffers them too.
                        self.head_bytes = self.head_bytes.saturating_add(consumed);
                        if self.head_bytes > self.max_head {
                            self.flag(verdict, Flag::HeadTooLarge);
                            return Step::Continue;
                        }
                    } else if self.line.len() + piece.len() > MAX_CHUNK_LINE_BYTES {
                        self.flag(verdict, Flag::BadChunk);
                        return Step::Continue;
                    }
                    // The line with its terminator: a chunk-size line is parsed as it came.
                    let raw = &rest[..consumed];
                    if newline.is_none() {
                        self.line.extend_from_slice(raw);
                        continue;
                    }
                    if self.line.is_empty() {
                        // The whole line arrived in this read (the common case): look at it in
                        // place rather than copying every head line into `line` first.
                        self.on_line(raw, verdict);
                        continue;
                    }
                    self.line.extend_from_slice(raw);
                    let mut line = std::mem::take(&mut self.line);
                    self.on_line(&line, verdict);
                    line.clear();
                    if self.state != State::Off {
                        self.line = line;
                    }
                }
            }
        }
        Step::Continue
    }

    /// Whether hyper's chunked decoder refuses `next` (the next bytes of the current line) as
    /// soon as they arrive, before the line ends: a chunk-size line must start with a hex digit
    /// (`read_start`), and chunk data must be followed by exactly CRLF (`read_body_cr`/`_lf`;
    /// a bare LF there is refused, not read as a line end).
    fn refuses_at_once(&self, next: &[u8]) -> bool {
        match self.state {
            State::ChunkSize => self.line.is_empty() && !next[0].is_ascii_hexdigit(),
            State::ChunkDataEnd => {
                let got = self.line.len() + next.len();
                got > 2 || !b"\r\n"[self.line.len()..].starts_with(next)
            }
            _ => false,
        }
    }

    /// One complete line, `raw` with its `\n` (and `\r`, when sent) still on.
    fn on_line(&mut self, raw: &[u8], verdict: &Verdict) {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            State::Head => self.on_head_line(line, verdict),
            State::ChunkSize => match chunk_size(raw) {
                Some(0) => self.state = State::Trailers,
                Some(n) => self.state = State::ChunkData(n),
                None => self.flag(verdict, Flag::BadChunk),
            },
            // `refuses_at_once` let only CRLF through.
            State::ChunkDataEnd => self.state = State::ChunkSize,
            State::Trailers => {
                // hyper ends a trailer line only at CRLF: a bare LF is part of the line (so a
                // blank line after it does not end the trailers, and hyper reads the next
                // request's head as more trailers), and a CR not before LF is an error. The
                // guard would split lines there and lose count of requests, so it refuses both.
                if !raw.ends_with(b"\r\n") || line.contains(&b'\r') {
                    self.flag(verdict, Flag::BadChunk);
                } else if line.is_empty() {
                    self.start_head();
                }
            }
            State::Fixed(_) | State::ChunkData(_) | State::Off => {}
        }
    }

    /// Flags the request whose head just completed (already counted in `heads`).
    fn flag_previous(&mut self, verdict: &Verdict, flag: Flag) {
        verdict.set(self.heads.saturating_sub(1), flag);
        self.off();
    }

    fn start_head(&mut self) {
        self.state = State::Head;
        self.saw_request_line = false;
        self.content_lengths = 0;
        self.content_length = None;
        self.transfer_encoding = None;
        self.head_bytes = 0;
        self.body_bytes = 0;
    }

    fn on_head_line(&mut self, line: &[u8], verdict: &Verdict) {
        if !self.saw_request_line {
            // Like httparse, skip empty lines before the request line.
            if line.is_empty() {
                return;
            }
            if self.heads == 0 && line.starts_with(b"PRI * HTTP/2.0") {
                // HTTP/2 with prior knowledge: only possible as the connection's first bytes, and
                // then the connection is HTTP/2 for good.
                self.off();
                return;
            }
            self.saw_request_line = true;
            return;
        }
        if !line.is_empty() {
            let Some(colon) = find_byte(line, b':') else {
                // hyper answers 400 itself; should it ever accept the line, so does the guard.
                self.flag(verdict, Flag::Unfollowable);
                return;
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"content-length") {
                self.content_lengths += 1;
                // Digits only, as hyper reads it: `parse` alone would also take a leading `+`.
                self.content_length = value
                    .iter()
                    .all(u8::is_ascii_digit)
                    .then(|| std::str::from_utf8(value).ok()?.parse::<u64>().ok())
                    .flatten();
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // hyper looks at the last Transfer-Encoding line's final coding.
                let last = value.rsplit(|&c| c == b',').next().map(trim);
                self.transfer_encoding =
                    Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
            }
            return;
        }
        // The head is complete.
        self.heads += 1;
        if self.content_lengths > 0 && self.transfer_encoding.is_some() {
            self.flag_previous(verdict, Flag::ClAndTe);
            return;
        }
        if self.content_lengths > 1 {
            self.flag_previous(verdict, Flag::DuplicateCl);
            return;
        }
        let (te, cl, lengths) = (
            self.transfer_encoding,
            self.content_length,
            self.content_lengths,
        );
        self.start_head();
        match (te, cl) {
            (Some(true), _) => self.state = State::ChunkSize,
            // Transfer-Encoding without final chunked, or an unparsable Content-Length: hyper
            // answers 400 itself; the guard flags them too rather than guess the framing.
            (Some(false), _) => self.flag_previous(verdict, Flag::Unfollowable),
            (None, None) if lengths > 0 => self.flag_previous(verdict, Flag::Unfollowable),
            (None, Some(0)) | (None, None) => {}
            (None, Some(n)) => self.state = State::Fixed(n),
        }
    }
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

/// A chunk-size line (with its CRLF): hex digits, then optional whitespace and `;extensions`.
/// httparse parses it as hyper's decoder does (CRLF required, at most 16 digits) but reads a
/// line without digits as size 0, which hyper refuses; so a digit must come first.
fn chunk_size(raw: &[u8]) -> Option<u64> {
    if !raw.first().is_some_and(u8::is_ascii_hexdigit) {
        return None;
    }
    match httparse::parse_chunk_size(raw) {
        Ok(httparse::Status::Complete((_, size))) => Some(size),
        // Partial: the line ended in a bare LF, which hyper refuses too.
        Ok(httparse::Status::Partial) | Err(_) => None,
    }
}

/// What the guard made of a byte stream, for the differential fuzz target
/// (`fuzz/fuzz_targets/framing_guard_vs_httparse.rs`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    /// Request heads the guard saw complete (a head flagged once complete included).
    pub heads: u64,
    /// The first flagged request (0-based) and the status it gets.
    pub refused: Option<(u64, u16)>,
}

/// Feeds `input` to a guard with head limit `max_head` and no body limit, in two reads split at
/// `split` (clamped), as a caller's bytes may arrive.
#[doc(hidden)]
pub fn follow(input: &[u8], split: usize, max_head: usize) -> Followed {
    let verdict = Verdict::new(max_head, None);
    let mut tracker = Tracker::new(max_head, None);
    let (first, rest) = input.split_at(split.min(input.len()));
    for piece in [first, rest] {
        let _ = tracker.feed(piece, &verdict);
    }
    let first = verdict.first_flagged.load(Ordering::Acquire);
    Followed {
        heads: tracker.heads,
        refused: (first != NONE).then(|| {
            let status = verdict.refusal(first).map_or(0, |r| r.status().as_u16());
            (first, status)
        }),
    }
}

/// The IO wrapper: reads pass through the tracker.
#[derive(Debug)]
pub(crate) struct FramingGuard<I> {
    inner: I,
    tracker: Tracker,
    verdict: Arc<Verdict>,
    /// The body limit was passed: every further read fails.
    cut: bool,
}

impl<I> FramingGuard<I> {
    /// Wraps `inner`; `max_head` is the head size hyper accepts, `max_body` the chunked body limit.
    pub(crate) fn new(inner: I, max_head: usize, max_body: Option<u64>) -> (Self, Arc<Verdict>) {
        let verdict = Arc::new(Verdict::new(max_head, max_body));
        let guard = Self {
            inner,
            tracker: Tracker::new(max_head, max_body),
            verdict: Arc::clone(&verdict),
            cut: false,
        };
        (guard, verdict)
    }
}

impl<I> FramingGuard<I> {
    /// The number of request heads read, when every byte read so far ends exactly where a
    /// request head would start (nothing of the next one seen but blank lines, which hyper skips);
    /// `None` inside a head or body, after a cut, or once the guard stopped following (HTTP/2, or
    /// a flagged request).
    pub(crate) fn at_boundary(&self) -> Option<u64> {
        let t = &self.tracker;
        (!self.cut && t.state == State::Head && !t.saw_request_line && t.line.is_empty())
            .then_some(t.heads)
    }

    /// Frees the line buffer's capacity when it holds nothing (an idle connection keeps no heap).
    pub(crate) fn release(&mut self) {
        if self.tracker.line.is_empty() {
            self.tracker.line = Vec::new();
        }
    }
}

impl<I> BodyDue for FramingGuard<I> {
    fn body_due(&self) -> bool {
        !self.cut
            && matches!(
                self.tracker.state,
                State::Fixed(_)
                    | State::ChunkSize
                    | State::ChunkData(_)
                    | State::ChunkDataEnd
                    | State::Trailers
            )
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FramingGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request body over the limit",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && let Step::CutAt(at) = this.tracker.feed(&buf.filled()[before..], &this.verdict)
        {
            // Hand hyper the bytes up to the limit; the next read fails, aborting the body.
            buf.set_filled(before + at);
            this.cut = true;
        }
        polled
    }
}

super::write_through::write_through!(FramingGuard, inner);

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: usize = 64 * 1024;

    fn run(input: &[u8], max_body: Option<u64>) -> (Arc<Verdict>, Tracker, Option<usize>) {
        let verdict = Arc::new(Verdict::new(HEAD, max_body));
        let mut t = Tracker::new(HEAD, max_body);
        // Byte by byte and all at once must agree; feed in two uneven pieces.
        let mid = input.len() / 3;
        let mut cut = None;
        for (offset, piece) in [(0, &input[..mid]), (mid, &input[mid..])] {
            if let Step::CutAt(at) = t.feed(piece, &verdict) {
                cut = Some(offset + at);
                break;
            }
        }
        (verdict, t, cut)
    }

    #[test]
    fn clean_pipelined_requests_are_followed_and_not_flagged() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        let (v, t, cut) = run(input, None);
        assert_eq!(t.heads, 3);
        assert_eq!(t.state, State::Head);
        assert!(v.refusal(0).is_none() && v.refusal(2).is_none());
        assert!(cut.is_none());
    }

    #[test]
    fn byte_by_byte_reads_follow_the_same_framing() {
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
POST /c HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let verdict = Verdict::new(HEAD, None);
        let mut t = Tracker::new(HEAD, None);
        for b in input.iter() {
            let _ = t.feed(std::slice::from_ref(b), &verdict);
        }
        assert_eq!(t.heads, 3);
        assert!(verdict.refusal(1).is_none());
        assert_eq!(verdict.refusal(2).map(|r| r.status().as_u16()), Some(400));
    }

    #[test]
    fn cl_and_te_flags_that_request_only() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        let (v, _, _) = run(input, None);
        assert!(v.refusal(0).is_none());
        assert_eq!(
            v.refusal(1),
            Some(LimitRefusal::AmbiguousFraming {
                reason: framing::CL_AND_TE
            })
        );
    }

    #[test]
    fn duplicate_cl_and_bad_chunks_are_flagged() {
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            run(dup, None).0.refusal(0).map(|r| r.status().as_u16()),
            Some(400)
        );
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3 x\r\n",
            // hyper requires CRLF after the size (and refuses a bare LF in an extension).
            b"3\n",
            b"3;x\n",
            b"11111111111111111\r\n",
        ] {
            let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(bad);
            assert_eq!(
                run(&input, None).0.refusal(0),
                Some(LimitRefusal::AmbiguousFraming {
                    reason: framing::BAD_CHUNK
                }),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunk_data_must_end_in_crlf_as_hyper_requires() {
        // Found by the fuzz target (regressions/framing_guard_vs_httparse-chunk-extension-split):
        // the guard read a bare LF after chunk data as the line end; hyper's decoder refuses it
        // ("Invalid chunk body CR"). Also refused at once: a chunk-size line not starting with
        // a hex digit, without waiting for its line end.
        for bad in [
            &b"1\r\nx\n0\r\n\r\n"[..],
            b"1\r\nxy\r\n",
            b"1\r\nx\r\r\n",
            b"1\r\nx\r\n\xff",
        ] {
            let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(bad);
            for split in 0..input.len() {
                let got = follow(&input, split, HEAD);
                assert_eq!(got.refused, Some((0, 400)), "{bad:?} split at {split}");
            }
        }
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/framing_guard_vs_httparse-chunk-extension-split"
        ))
        .unwrap();
        let (split, input) = input.split_first().unwrap();
        let got = follow(input, usize::from(*split) * input.len() / 256, 8 * 1024);
        assert_eq!(got.refused, Some((0, 400)));
    }

    #[test]
    fn trailer_lines_must_end_in_crlf_as_hyper_reads_them() {
        // hyper ends a trailer line only at CRLF: after `X: a\n` the blank line does not end
        // the trailers, so hyper reads the pipelined GET as more trailers while a line-by-line
        // reader counts it as request 1, and the guard's refusal of the next request would land
        // on the wrong one. The guard refuses such trailers (and a lone CR) instead.
        for trailers in [&b"X: a\n\r\n"[..], b"X: a\r\n\n", b"X: a\rb\r\n\r\n"] {
            let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
            input.extend_from_slice(trailers);
            input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            input.extend_from_slice(DUP_CL);
            let (v, _, _) = run(&input, None);
            assert_eq!(
                v.refusal(0),
                Some(LimitRefusal::AmbiguousFraming {
                    reason: framing::BAD_CHUNK
                }),
                "{trailers:?}"
            );
        }
        let clean = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (v, t, _) = run(clean, None);
        assert!(v.refusal(1).is_none());
        assert_eq!(t.heads, 2);
    }

    #[test]
    fn chunked_body_over_the_limit_is_cut_at_the_limit() {
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n";
        let (v, _, cut) = run(input, Some(6));
        assert_eq!(v.refusal(0), Some(LimitRefusal::BodyTooLarge { max: 6 }));
        let at = cut.unwrap();
        assert_eq!(&input[at - 2..at], b"ef");
        let (v, _, cut) = run(input, Some(8));
        assert!(v.refusal(0).is_none() && cut.is_none());
    }

    #[test]
    fn h2_preface_turns_the_guard_off() {
        let (v, t, _) = run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None);
        assert_eq!(t.state, State::Off);
        assert!(v.refusal(0).is_none());
    }

    /// A keep-alive GET padded in front with CRLFs to `total` bytes.
    fn padded_get(total: usize) -> Vec<u8> {
        let get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = b"\r\n".repeat((total - get.len()) / 2);
        out.extend_from_slice(get);
        assert_eq!(out.len(), total);
        out
    }

    const DUP_CL: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nX";

    #[test]
    fn a_padded_head_over_the_limit_is_flagged_431_not_ignored() {
        // Before: the guard switched itself off here, and the duplicate Content-Length behind the
        // padded head went unflagged.
        for total in [HEAD + 2, HEAD + 4096] {
            let mut input = padded_get(total);
            input.extend_from_slice(DUP_CL);
            let (v, t, _) = run(&input, None);
            assert_eq!(
                v.refusal(0),
                Some(LimitRefusal::HeadTooLarge { max: HEAD }),
                "{total}"
            );
            assert_eq!(v.refusal(0).map(|r| r.status().as_u16()), Some(431));
            assert!(v.refusal(1).is_some(), "later requests are refused too");
            assert!(t.line.capacity() == 0, "nothing kept after flagging");
        }
    }

    #[test]
    fn a_head_at_the_limit_leaves_the_guard_watching_the_next_request() {
        let mut input = padded_get(HEAD);
        input.extend_from_slice(DUP_CL);
        let (v, _, _) = run(&input, None);
        assert!(v.refusal(0).is_none());
        assert_eq!(
            v.refusal(1),
            Some(LimitRefusal::AmbiguousFraming {
                reason: framing::DUPLICATE_CL
            })
        );
    }

    #[test]
    fn trailers_count_against_the_head_limit() {
        let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        input.extend_from_slice(format!("x-t: {}\r\n\r\n", "t".repeat(HEAD)).as_bytes());
        let (v, _, _) = run(&input, None);
        assert_eq!(v.refusal(0), Some(LimitRefusal::HeadTooLarge { max: HEAD }));
    }

    #[test]
    fn a_long_chunk_line_is_refused_not_skipped() {
        // Before: a chunk extension over 4 KiB (hyper allows 16 KiB) switched the guard off.
        let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(
            format!("5;x={}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000)).as_bytes(),
        );
        input.extend_from_slice(DUP_CL);
        let (v, _, _) = run(&input, None);
        assert_eq!(
            v.refusal(0),
            Some(LimitRefusal::AmbiguousFraming {
                reason: framing::BAD_CHUNK
            })
        );
    }

    #[test]
    fn heads_the_guard_cannot_read_are_flagged_not_skipped() {
        for head in [
            &b"POST / HTTP/1.1\r\nno colon here\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            // `str::parse` takes a leading `+`; hyper does not (found writing the fuzz target).
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        ] {
            let mut input = head.to_vec();
            input.extend_from_slice(DUP_CL);
            let (v, _, _) = run(&input, None);
            assert_eq!(
                v.refusal(0).map(|r| r.status().as_u16()),
                Some(400),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn an_h2_preface_after_a_request_does_not_turn_the_guard_off() {
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\n".to_vec();
        input.extend_from_slice(DUP_CL);
        let (v, t, _) = run(&input, None);
        assert!(v.refusal(1).is_none());
        assert_eq!(t.heads, 3);
        assert_eq!(v.refusal(2).map(|r| r.status().as_u16()), Some(400));
    }
}
