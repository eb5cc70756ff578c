//! The opening of a connection on an intercepting listener: a `CONNECT host:port` head, read and
//! parsed here before hyper sees the connection, or anything else, handed back untouched.
//!
//! A CONNECT opens its connection (RFC 9110 §9.3.6: after a 2xx the connection is the tunnel), so
//! only the first request of a connection is looked at; a CONNECT later on a keep-alive
//! connection reaches the request path, which refuses it (405).

use std::time::Duration;

use http::StatusCode;
use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The method and the space after it that open a CONNECT request line.
const CONNECT: &[u8] = b"CONNECT ";

/// What the connection opened with.
#[derive(Debug)]
pub(super) enum Opening {
    /// Not a CONNECT: the bytes read so far, to be served as a plain connection.
    Other(Vec<u8>),
    /// A CONNECT head for `authority` (`host:port`); `rest` is what came after the head.
    Connect { authority: String, rest: Vec<u8> },
    /// A CONNECT head that cannot be served: answer `status` with `reason`, then close.
    Refused {
        status: StatusCode,
        reason: &'static str,
        /// The metric label.
        label: &'static str,
    },
    /// The caller closed, or the head was not complete within the head deadline.
    Closed,
}

/// Reads the connection's opening. `max_head` bounds the CONNECT head (the listener's
/// `max_header_bytes`), `max_headers` its header lines, `head_timeout` the time from the head's
/// first bytes to its end (the listener's `header_read_timeout`). The wait for the first bytes
/// is the accept loop's first-byte deadline.
pub(super) async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    max_head: usize,
    max_headers: usize,
    head_timeout: Duration,
) -> Opening {
    let mut buf = Vec::with_capacity(CONNECT.len());
    while buf.len() < CONNECT.len() {
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Opening::Closed,
            Ok(0) | Err(_) => return Opening::Other(buf),
            Ok(_) => {}
        }
        let n = buf.len().min(CONNECT.len());
        if buf[..n] != CONNECT[..n] {
            return Opening::Other(buf);
        }
    }
    match tokio::time::timeout(head_timeout, read_head(io, buf, max_head)).await {
        Ok(Some((buf, end))) => parse(&buf, end, max_headers),
        Ok(None) => Opening::Closed,
        Err(_) => {
            tracing::info!("CONNECT head not complete within the head deadline; closed");
            Opening::Closed
        }
    }
}

/// Reads until the blank line ending the head; `(bytes, head length)`, or `None` when the
/// caller closed first. A head past `max_head` is answered by [`parse`]'s caller.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    mut buf: Vec<u8>,
    max_head: usize,
) -> Option<(Vec<u8>, usize)> {
    let mut scanned = 0;
    loop {
        if let Some(i) = find_end(&buf[scanned..]) {
            let end = scanned + i;
            // A head longer than the limit is refused even when it arrived in one read.
            let end = if end > max_head { usize::MAX } else { end };
            return Some((buf, end));
        }
        if buf.len() > max_head {
            // `parse` sees no end within the limit and refuses with 431.
            return Some((buf, usize::MAX));
        }
        // The end may straddle two reads: look again from three bytes back.
        scanned = buf.len().saturating_sub(3);
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The offset just past the first `\r\n\r\n`.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn parse(buf: &[u8], end: usize, max_headers: usize) -> Opening {
    let refused = |status, reason, label| Opening::Refused {
        status,
        reason,
        label,
    };
    if end == usize::MAX {
        return refused(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the CONNECT request head is larger than the listener's max_header_bytes",
            "head_too_large",
        );
    }
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the CONNECT request has more header lines than the listener's max_headers",
                "head_too_large",
            );
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "the CONNECT request head is malformed",
                "bad_request",
            );
        }
    }
    let target = request.path.unwrap_or("");
    match target.parse::<Authority>() {
        Ok(a) if a.port_u16().is_some() && !a.as_str().contains('@') => Opening::Connect {
            authority: a.as_str().to_string(),
            rest: buf[end..].to_vec(),
        },
        _ => refused(
            StatusCode::BAD_REQUEST,
            "a CONNECT target is host:port (RFC 9110 section 9.3.6)",
            "bad_request",
        ),
    }
}

/// Writes popgate's own answer to a CONNECT and closes the connection.
pub(super) async fn refuse<I: AsyncWrite + Unpin>(
    io: &mut I,
    status: StatusCode,
    body: &serde_json::Value,
) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = io.write_all(format!("{head}{body}").as_bytes()).await;
    let _ = io.shutdown().await;
}

/// Tells the caller the tunnel is open.
pub(super) async fn established<I: AsyncWrite + Unpin>(io: &mut I) -> std::io::Result<()> {
    io.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn opening(bytes: &[u8]) -> Opening {
        let mut io = bytes;
        read(&mut io, 1024, 16, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn a_connect_head_gives_its_authority_and_what_followed() {
        let o = opening(b"CONNECT graph.microsoft.com:443 HTTP/1.1\r\nHost: graph.microsoft.com:443\r\n\r\n\x16\x03").await;
        let Opening::Connect { authority, rest } = o else {
            panic!("{o:?}")
        };
        assert_eq!(authority, "graph.microsoft.com:443");
        assert_eq!(rest, b"\x16\x03");
    }

    #[tokio::test]
    async fn other_requests_are_handed_back_as_read() {
        let Opening::Other(b) = opening(b"GET / HTTP/1.1\r\n\r\n").await else {
            panic!()
        };
        assert!(b"GET / HTTP/1.1\r\n\r\n".starts_with(&b));
        assert!(matches!(opening(b"").await, Opening::Closed));
    }

    #[tokio::test]
    async fn bad_targets_and_oversized_heads_are_refused() {
        for head in [
            &b"CONNECT graph.microsoft.com HTTP/1.1\r\n\r\n"[..],
            b"CONNECT user@graph.microsoft.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT /path HTTP/1.1\r\n\r\n",
        ] {
            let o = opening(head).await;
            assert!(
                matches!(o, Opening::Refused { status, .. } if status == StatusCode::BAD_REQUEST),
                "{o:?}"
            );
        }
        let mut big = b"CONNECT a.example:443 HTTP/1.1\r\nx: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        big.extend(b"\r\n\r\n");
        let o = opening(&big).await;
        assert!(
            matches!(o, Opening::Refused { status, .. } if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "{o:?}"
        );
    }
}
