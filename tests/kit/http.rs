//! HTTP/1.1 callers of popgate's listeners: one answer type, a keep-alive connection, one request
//! on a fresh connection, and a raw `Connection: close` exchange. Every exchange is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt as _;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Upper bound for one request through popgate; a hang fails the test instead of stalling it.
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);
/// Upper bound for one raw exchange with a listener (admin or proxy).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A response as the caller saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A keep-alive HTTP/1.1 connection to `addr` (loopback only).
pub async fn dial<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    assert!(addr.ip().is_loopback(), "tests only target loopback");
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends `request` on `sender` and reads the whole answer; a transport failure is an `Err`
/// naming it.
pub async fn send_on<B>(
    sender: &mut SendRequest<B>,
    request: http::Request<B>,
) -> Result<Answer, String>
where
    B: http_body::Body + Send + 'static,
{
    sender
        .ready()
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Sends `request` on `sender`, expects 200, and reads the head and the first frame of the body,
/// each within `bound`; the rest is left unread, so the response stays mid-stream. Returns the
/// body and the bytes read so far.
pub async fn first_frame<B>(
    sender: &mut SendRequest<B>,
    request: http::Request<B>,
    bound: Duration,
) -> (hyper::body::Incoming, u64)
where
    B: http_body::Body + Send + 'static,
{
    let response = tokio::time::timeout(bound, sender.send_request(request))
        .await
        .expect("response head within its bound")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(bound, body.frame())
        .await
        .expect("first bytes within their bound")
        .expect("a first frame")
        .unwrap();
    let read = first.into_data().map(|d| d.len() as u64).unwrap_or(0);
    (body, read)
}

/// Sends `method http://{host}{path}` (absolute form, as an HTTP_PROXY client does) with `body`
/// over a fresh HTTP/1.1 connection to popgate.
pub async fn send<B>(proxy: SocketAddr, method: &str, host: &str, path: &str, body: B) -> Answer
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
        .header("host", host)
        .body(body)
        .unwrap();
    let exchange = async {
        let mut sender = dial(proxy).await?;
        send_on(&mut sender, request).await
    };
    tokio::time::timeout(REQUEST_BOUND, exchange)
        .await
        .expect("request through popgate exceeded its bound")
        .unwrap_or_else(|e| panic!("request through popgate: {e}"))
}

/// Writes one request head (`Connection: close`) and reads the whole answer, bounded in time.
/// Bodies are read to EOF; chunked framing is left in place (callers read only status and
/// headers of proxied answers, and admin answers have a length).
pub async fn raw_request(addr: SocketAddr, method: &str, host: &str, target: &str) -> Answer {
    assert!(addr.ip().is_loopback(), "tests only target loopback");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head =
            format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let mut headers = HeaderMap::new();
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}
