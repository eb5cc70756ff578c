//! Watches the first bytes a caller sends and tells its [`Activity`] when the first byte came and
//! when the protocol is known: HTTP/1 at the first byte that is not the HTTP/2 preface, HTTP/2
//! once the 24-byte preface and the whole first frame (SETTINGS, RFC 9113 §3.4) have arrived.
//! hyper-util's protocol detection waits for the preface with no timer, so this is what lets the
//! watchdog bound it. After that the wrapper only passes bytes through.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::activity::Activity;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame header: 24-bit length, type, flags, stream id.
const FRAME_HEADER_LEN: usize = 9;

/// Where the scan of the opening bytes is.
#[derive(Debug)]
enum Scan {
    /// This many bytes of the preface matched so far.
    Preface(usize),
    /// The preface is complete; this much of the first frame's header has arrived.
    FrameHeader([u8; FRAME_HEADER_LEN], usize),
    /// This many bytes of the first frame's payload are still to come.
    FramePayload(usize),
    /// The protocol is known.
    Done,
}

impl Scan {
    /// Advances over `bytes`; returns the new state.
    fn feed(self, mut bytes: &[u8]) -> Scan {
        let mut scan = self;
        while !bytes.is_empty() {
            scan = match scan {
                Scan::Preface(matched) => {
                    let want = &PREFACE[matched..];
                    let n = want.len().min(bytes.len());
                    if bytes[..n] != want[..n] {
                        // Not HTTP/2: HTTP/1 is known from its first bytes.
                        return Scan::Done;
                    }
                    bytes = &bytes[n..];
                    if matched + n == PREFACE.len() {
                        Scan::FrameHeader([0; FRAME_HEADER_LEN], 0)
                    } else {
                        Scan::Preface(matched + n)
                    }
                }
                Scan::FrameHeader(mut header, have) => {
                    let n = (FRAME_HEADER_LEN - have).min(bytes.len());
                    header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have + n < FRAME_HEADER_LEN {
                        Scan::FrameHeader(header, have + n)
                    } else {
                        let len = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        if len == 0 {
                            return Scan::Done;
                        }
                        Scan::FramePayload(len)
                    }
                }
                Scan::FramePayload(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    if n == left {
                        return Scan::Done;
                    }
                    Scan::FramePayload(left - n)
                }
                Scan::Done => return Scan::Done,
            };
        }
        scan
    }
}

/// A caller's stream, reporting its opening to `activity`.
#[derive(Debug)]
pub(crate) struct Opening<I> {
    io: I,
    activity: Arc<Activity>,
    scan: Scan,
}

impl<I> Opening<I> {
    pub(crate) fn new(io: I, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            scan: Scan::Preface(0),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Opening<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(this.scan, Scan::Done) {
            return polled;
        }
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            if matches!(this.scan, Scan::Preface(0)) {
                this.activity.first_byte();
            }
            let scan = std::mem::replace(&mut this.scan, Scan::Done);
            this.scan = scan.feed(fresh);
            if matches!(this.scan, Scan::Done) {
                this.activity.established();
            }
        }
        polled
    }
}

super::write_through::write_through!(Opening, io);

#[cfg(test)]
mod tests {
    use super::*;

    fn done(chunks: &[&[u8]]) -> bool {
        let scan = chunks
            .iter()
            .fold(Scan::Preface(0), |scan, chunk| scan.feed(chunk));
        matches!(scan, Scan::Done)
    }

    #[test]
    fn http1_is_known_at_once_and_http2_only_after_its_first_frame() {
        assert!(done(&[b"G"]));
        assert!(
            !done(&[b"PRI * HTTP/2.0\r\n"]),
            "a partial preface is not done"
        );
        assert!(
            !done(&[PREFACE]),
            "the preface without SETTINGS is not done"
        );
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert!(!done(&[PREFACE, &settings[..12]]));
        assert!(done(&[PREFACE, &settings]));
        // One byte at a time.
        let all: Vec<u8> = [PREFACE, &settings[..]].concat();
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert!(done(&bytes));
        assert!(
            done(&[PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0]]),
            "empty SETTINGS"
        );
    }
}
