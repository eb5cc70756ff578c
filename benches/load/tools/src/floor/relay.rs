//! One caller connection: GETs in, each relayed over the connection's own kept-alive upstream
//! connection, the answer's bytes written back as they came. Anything else closes the connection:
//! the floor never answers an error of its own.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::Upstream;

/// Read buffer of each side, and so the largest head: the harness's heads are a few hundred bytes.
const HEAD_BUFFER: usize = 16 * 1024;
/// Largest answer (head and body) relayed: the harness's bodies are 64 bytes.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Caller header fields not passed on: hop-by-hop ones, and the two the floor writes itself.
const NOT_FORWARDED: [&[u8]; 6] = [
    b"host",
    b"authorization",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
];

pub(crate) async fn serve(listener: std::net::TcpListener, upstream: Arc<Upstream>) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(e) => crate::cli::fail(format!("listener: {e}")),
    };
    loop {
        let Ok((caller, _)) = listener.accept().await else {
            tokio::time::sleep(crate::upstream::ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        let _ = caller.set_nodelay(true);
        tokio::spawn(connection(caller, upstream.clone()));
    }
}

async fn connection(mut caller: TcpStream, upstream: Arc<Upstream>) {
    let mut request = vec![0u8; HEAD_BUFFER];
    let mut filled = 0;
    let mut head = Vec::with_capacity(2048);
    let mut response = vec![0u8; HEAD_BUFFER];
    let mut dialed: Option<TlsStream<TcpStream>> = None;
    loop {
        let Some(head_len) = read_head(&mut caller, &mut request, &mut filled).await else {
            return;
        };
        if !upstream_head(&request[..head_len], &upstream.fixed_headers, &mut head) {
            return;
        }
        request.copy_within(head_len..filled, 0);
        filled -= head_len;
        if dialed.is_none() {
            dialed = dial(&upstream).await;
        }
        let Some(tls) = dialed.as_mut() else {
            return;
        };
        if tls.write_all(&head).await.is_err() || tls.flush().await.is_err() {
            return;
        }
        let Some(len) = read_response(tls, &mut response).await else {
            return;
        };
        if caller.write_all(&response[..len]).await.is_err() {
            return;
        }
    }
}

async fn dial(upstream: &Upstream) -> Option<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(upstream.addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    upstream
        .connector
        .connect(upstream.name.clone(), tcp)
        .await
        .ok()
}

/// Reads until `buf[..filled]` holds a whole head; its length. None: closed, failed or too long.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut [u8],
    filled: &mut usize,
) -> Option<usize> {
    let mut searched = 0;
    loop {
        if let Some(end) = head_end(&buf[..*filled], searched) {
            return Some(end);
        }
        searched = filled.saturating_sub(3);
        if *filled == buf.len() {
            return None;
        }
        let n = io.read(&mut buf[*filled..]).await.ok()?;
        if n == 0 {
            return None;
        }
        *filled += n;
    }
}

/// The end of the first `\r\n\r\n` at or after `from`.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 4 <= bytes.len() {
        if bytes[i + 3] != b'\n' {
            // The byte at i+3 is not a line end, so no terminator ends at i+3.
            i += 1;
            continue;
        }
        if &bytes[i..i + 3] == b"\r\n\r" {
            return Some(i + 4);
        }
        i += 1;
    }
    None
}

/// Writes the upstream head for a caller's GET head into `out`; false for anything else.
fn upstream_head(head: &[u8], fixed: &[u8], out: &mut Vec<u8>) -> bool {
    let mut lines = head[..head.len() - 4]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return false;
    };
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let (Some(b"GET"), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(path) = origin_form(target) else {
        return false;
    };
    out.clear();
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(fixed);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let name = &line[..colon];
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            // A body: not the floor's job.
            return false;
        }
        if !NOT_FORWARDED.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    true
}

/// The path of an origin-form or absolute-form (`http://authority/path`) request target.
fn origin_form(target: &[u8]) -> Option<&[u8]> {
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let rest = target.strip_prefix(b"http://")?;
    Some(match rest.iter().position(|&b| b == b'/') {
        Some(slash) => &rest[slash..],
        None => b"/",
    })
}

/// Reads one whole answer (a `content-length` body) into `buf`; its length.
async fn read_response<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> Option<usize> {
    let mut filled = 0;
    let head_len = read_head(io, buf, &mut filled).await?;
    let total = head_len.checked_add(content_length(&buf[..head_len])?)?;
    if total > MAX_RESPONSE {
        return None;
    }
    if buf.len() < total {
        buf.resize(total, 0);
    }
    while filled < total {
        let n = io.read(&mut buf[filled..total]).await.ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
    }
    // More than one answer's bytes: the upstream answered something not asked.
    (filled == total).then_some(total)
}

/// The body length an answer head declares; None for a chunked or close-delimited body.
fn content_length(head: &[u8]) -> Option<usize> {
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..]).ok()?.trim();
            length = Some(value.parse().ok()?);
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_finds_the_terminator_across_reads() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nrest";
        assert_eq!(head_end(head, 0), Some(27));
        assert_eq!(head_end(&head[..26], 0), None);
        assert_eq!(head_end(head, 23), Some(27));
    }

    #[test]
    fn the_upstream_head_carries_the_token_and_drops_hop_by_hop_fields() {
        let mut out = Vec::new();
        let caller = b"GET http://127.0.0.1:1/bench?x=1 HTTP/1.1\r\nHost: p\r\nConnection: keep-alive\r\nUser-Agent: t\r\n\r\n";
        assert!(upstream_head(
            caller,
            b"host: up\r\nauthorization: a\r\n",
            &mut out
        ));
        assert_eq!(
            out,
            b"GET /bench?x=1 HTTP/1.1\r\nhost: up\r\nauthorization: a\r\nUser-Agent: t\r\n\r\n"
        );
        assert!(!upstream_head(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"",
            &mut out
        ));
        assert!(!upstream_head(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"",
            &mut out
        ));
    }

    #[test]
    fn content_length_is_read_and_chunked_refused() {
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n"),
            Some(64)
        );
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
