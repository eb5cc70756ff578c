//! A connection with bytes already read from it put back in front: what was read while looking
//! for a CONNECT (a plain request's opening bytes, or a ClientHello sent right behind the CONNECT
//! head) is read again by whoever serves the connection next.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// `io` with `prefix` read first. Writes go straight to `io` (`write_through!`).
#[derive(Debug)]
pub(crate) struct Prefixed<I> {
    prefix: Vec<u8>,
    /// How much of `prefix` was read.
    at: usize,
    io: I,
}

impl<I> Prefixed<I> {
    pub(crate) fn new(prefix: Vec<u8>, io: I) -> Self {
        Self { prefix, at: 0, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                // Done with it: give the memory back.
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

crate::dataplane::write_through::write_through!(Prefixed, io);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn the_prefix_is_read_before_the_connection() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b" world")
            .await
            .unwrap();
        drop(client);
        let mut io = Prefixed::new(b"hello".to_vec(), server);
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
