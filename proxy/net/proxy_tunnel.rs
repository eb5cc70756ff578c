//! `CONNECT host:port HTTP/1.1` through an outbound HTTP proxy (RFC 9110 §9.3.6): on a TCP
//! connection to the proxy, ask for a tunnel to the real host name (the proxy resolves it), wait
//! for a 2xx, and hand the connection back for the TLS handshake, which then runs end to end with
//! the upstream (the client certificate and the PoP binding never meet the proxy).
//!
//! The answer's head is read byte by byte, so not one byte of the tunnel (the server's TLS
//! records) is consumed here, and bounded by [`MAX_CONNECT_RESPONSE_HEAD`]. The caller bounds the
//! whole exchange in time (the connect timeout).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

use crate::config::outbound_proxy::OutboundProxy;

/// Largest CONNECT response head accepted: a proxy's 200 is a status line and a few headers; a
/// 407 may add a `Proxy-Authenticate` challenge or two. Anything longer is not a proxy answer.
pub(crate) const MAX_CONNECT_RESPONSE_HEAD: usize = 8 * 1024;

/// Longest reason phrase kept for an error message (the rest is cut).
const MAX_REASON_CHARS: usize = 64;

/// Why the tunnel was not opened. Never holds the credentials.
#[derive(Debug)]
pub(crate) enum TunnelError {
    /// The proxy answered the CONNECT with a non-2xx status.
    Refused {
        /// Its status code.
        status: u16,
        /// Its reason phrase (printable ASCII, cut to [`MAX_REASON_CHARS`]).
        reason: String,
    },
    /// The proxy's answer was not an HTTP response head within the bound, or I/O failed.
    Protocol(String),
}

/// The CONNECT request for `authority` (`host:port`, IPv6 in brackets). It carries the
/// `Proxy-Authorization` value, so it is built in one buffer sized exactly up front (no
/// reallocation leaves a copy behind) and zeroized when dropped, right after it is written.
/// The copy the kernel makes into its socket buffer is out of popgate's reach.
fn request(proxy: &OutboundProxy, authority: &str) -> Zeroizing<Vec<u8>> {
    const CONNECT: &str = "CONNECT ";
    const VERSION_HOST: &str = " HTTP/1.1\r\nHost: ";
    const AUTHORIZATION: &str = "Proxy-Authorization: ";
    const CRLF: &str = "\r\n";
    let auth = proxy.authorization().map(|a| a.header_value());
    let len = CONNECT.len()
        + authority.len()
        + VERSION_HOST.len()
        + authority.len()
        + CRLF.len()
        + auth.map_or(0, |a| AUTHORIZATION.len() + a.len() + CRLF.len())
        + CRLF.len();
    let mut head = Zeroizing::new(Vec::with_capacity(len));
    for part in [CONNECT, authority, VERSION_HOST, authority, CRLF] {
        head.extend_from_slice(part.as_bytes());
    }
    if let Some(auth) = auth {
        for part in [AUTHORIZATION, auth, CRLF] {
            head.extend_from_slice(part.as_bytes());
        }
    }
    head.extend_from_slice(CRLF.as_bytes());
    head
}

/// Sends `CONNECT authority` on `io` (a connection to `proxy`) and reads the answer's head.
pub(crate) async fn open<S>(
    io: &mut S,
    proxy: &OutboundProxy,
    authority: &str,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_error = |e: io::Error| TunnelError::Protocol(format!("I/O with the proxy failed: {e}"));
    io.write_all(&request(proxy, authority))
        .await
        .map_err(io_error)?;
    io.flush().await.map_err(io_error)?;
    let head = read_head(io).await?;
    let (status, reason) = status_line(&head)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(TunnelError::Refused { status, reason })
    }
}

async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<Vec<u8>, TunnelError> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_CONNECT_RESPONSE_HEAD {
            return Err(TunnelError::Protocol(format!(
                "its answer to CONNECT exceeds {MAX_CONNECT_RESPONSE_HEAD} bytes without ending its head"
            )));
        }
        let n = io.read(&mut byte).await.map_err(|e| {
            TunnelError::Protocol(format!("reading its answer to CONNECT failed: {e}"))
        })?;
        if n == 0 {
            return Err(TunnelError::Protocol(if head.is_empty() {
                "it closed the connection without answering CONNECT".into()
            } else {
                "it closed the connection in the middle of its answer to CONNECT".into()
            }));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// `HTTP/1.x SSS reason` → (SSS, reason).
fn status_line(head: &[u8]) -> Result<(u16, String), TunnelError> {
    let bad = || TunnelError::Protocol("its answer to CONNECT is not an HTTP/1.x response".into());
    let end = head.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let line = std::str::from_utf8(&head[..end]).map_err(|_| bad())?;
    let line = line.trim_end_matches('\r');
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .ok_or_else(bad)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..600).contains(&status) {
        return Err(bad());
    }
    let reason: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_REASON_CHARS)
        .collect();
    Ok((status, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::no_proxy::NoProxy;
    use crate::config::outbound_proxy::ProxyUrl;

    fn proxy(url: &str) -> OutboundProxy {
        OutboundProxy::new(
            ProxyUrl::parse(url).unwrap(),
            None,
            NoProxy::default(),
            "test",
        )
    }

    async fn answer(reply: &'static [u8]) -> (Result<(), TunnelError>, Vec<u8>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let p = proxy("http://u:pw@proxy:3128");
        let server = tokio::spawn(async move {
            let mut seen = vec![0u8; 4096];
            let n = theirs.read(&mut seen).await.unwrap();
            seen.truncate(n);
            theirs.write_all(reply).await.unwrap();
            seen
        });
        let result = open(&mut ours, &p, "graph.microsoft.com:443").await;
        let seen = server.await.unwrap();
        let mut rest = Vec::new();
        if result.is_ok() {
            let mut buf = [0u8; 16];
            let n = ours.read(&mut buf).await.unwrap();
            rest.extend_from_slice(&buf[..n]);
        }
        (result, seen, rest)
    }

    #[tokio::test]
    async fn two_hundred_opens_and_leaves_the_tunnel_bytes_unread() {
        let (result, seen, rest) =
            answer(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n\x16\x03\x03").await;
        assert!(result.is_ok());
        let seen = String::from_utf8(seen).unwrap();
        assert!(
            seen.starts_with(
                "CONNECT graph.microsoft.com:443 HTTP/1.1\r\nHost: graph.microsoft.com:443\r\n"
            ),
            "{seen}"
        );
        assert!(
            seen.contains("Proxy-Authorization: Basic dTpwdw==\r\n"),
            "{seen}"
        );
        assert_eq!(
            rest, b"\x16\x03\x03",
            "TLS bytes after the head stay in the stream"
        );
    }

    #[test]
    fn the_connect_head_is_built_without_reallocating() {
        // A reallocation would leave a copy of the credentials in freed memory.
        let head = request(&proxy("http://u:pw@proxy:3128"), "[::1]:443");
        assert_eq!(head.len(), head.capacity());
        assert!(head.ends_with(b"Proxy-Authorization: Basic dTpwdw==\r\n\r\n"));
        let head = request(&proxy("http://proxy:3128"), "graph.microsoft.com:443");
        assert_eq!(head.len(), head.capacity());
        assert_eq!(
            &head[..],
            b"CONNECT graph.microsoft.com:443 HTTP/1.1\r\nHost: graph.microsoft.com:443\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn refusals_carry_status_and_reason() {
        let (result, _, _) = answer(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
        )
        .await;
        match result {
            Err(TunnelError::Refused { status, reason }) => {
                assert_eq!(status, 407);
                assert_eq!(reason, "Proxy Authentication Required");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_and_endless_heads_are_protocol_errors() {
        let (result, _, _) = answer(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(
            matches!(result, Err(TunnelError::Protocol(_))),
            "{result:?}"
        );
        let endless: &'static [u8] = Box::leak(
            [
                b"HTTP/1.1 200 OK\r\n".as_slice(),
                &[b'a'; MAX_CONNECT_RESPONSE_HEAD],
            ]
            .concat()
            .into_boxed_slice(),
        );
        let (result, _, _) = answer(endless).await;
        match result {
            Err(TunnelError::Protocol(m)) => assert!(m.contains("exceeds"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
