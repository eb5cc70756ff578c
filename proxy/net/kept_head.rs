//! The head of a request as it went upstream, kept for one replay (an upstream `401
//! invalid_token` answer, `dataplane/request/send.rs`). popgate's HTTP/1.1 codec only borrows the
//! request to write its head, so a request sent that way is kept whole and nothing is copied; a
//! sender that consumes the request (h2, hyper's HTTP/1.1 client) gets it after a copy taken just
//! before (benches/MICRO.md, issue 13: the copy was ~1,400 instructions per request). The head
//! goes into a slot of the replaying future, not back up through each answer: moving it through
//! every level cost more in copies than the copy it saves.

use http::header::HOST;
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::net::upstream_body::UpstreamBody;

/// A request head kept for a replay: method, absolute URI and header fields. Its `Debug` lists
/// the header names only (the values hold the token).
pub struct KeptHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl KeptHead {
    /// A copy of `request`'s head (the header values are shared, not copied); `absolute`: as
    /// [`KeptHead::take`].
    pub(crate) fn copy<B>(request: &Request<B>, absolute: Option<&Uri>) -> Self {
        Self {
            method: request.method().clone(),
            uri: absolute.unwrap_or(request.uri()).clone(),
            headers: request.headers().clone(),
        }
    }

    /// `request`'s own head, its body dropped; `absolute`: the URI it had before it was put in
    /// origin form for an HTTP/1.1 connection, if it was.
    pub(crate) fn take<B>(request: Request<B>, absolute: Option<Uri>) -> Self {
        let (parts, _body) = request.into_parts();
        Self {
            method: parts.method,
            uri: absolute.unwrap_or(parts.uri),
            headers: parts.headers,
        }
    }

    /// The request again with `body`, as the upstream client takes it: absolute URI, HTTP/1.1,
    /// and no `Host` (the client sets it when the connection it picks is HTTP/1.1; h2 sends the
    /// authority instead). The caller sets the new token's `Authorization`.
    pub fn into_request(self, body: UpstreamBody) -> Request<UpstreamBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request.headers_mut().remove(HOST);
        request
    }
}

impl std::fmt::Debug for KeptHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptHead")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &HeaderNames(&self.headers))
            .finish()
    }
}

/// A header map in `Debug`: its names only (the values may hold the token). Also used by the
/// rewrite step's `Outgoing`.
pub(crate) struct HeaderNames<'a>(pub(crate) &'a HeaderMap);

impl std::fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Where a request's head is kept for a replay, when its sender asked for it: a slot the sender
/// owns (so the head is not moved up through every future and answer on its way back), filled
/// once. A request can meet more than one sender: an h2 connection that turned out to be gone,
/// then the HTTP/1.1 pool.
#[derive(Debug)]
pub(crate) struct Keeper<'a> {
    slot: Option<&'a mut Option<KeptHead>>,
}

impl<'a> Keeper<'a> {
    /// Keeps the head in `slot`, if given.
    pub(crate) fn new(slot: Option<&'a mut Option<KeptHead>>) -> Self {
        Self { slot }
    }

    /// Before `request` goes to a sender that consumes it: copies its head into the slot unless
    /// it holds one already (`absolute`: as [`KeptHead::take`]).
    pub(crate) fn before_consuming<B>(&mut self, request: &Request<B>, absolute: Option<&Uri>) {
        if let Some(slot) = &mut self.slot
            && slot.is_none()
        {
            **slot = Some(KeptHead::copy(request, absolute));
        }
    }

    /// After a sender that only borrowed `request`: its own head goes into the slot (`absolute`:
    /// as [`KeptHead::take`]), in place of any earlier copy.
    pub(crate) fn returned<B>(self, request: Request<B>, absolute: Option<Uri>) {
        if let Some(slot) = self.slot {
            *slot = Some(KeptHead::take(request, absolute));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{AUTHORIZATION, HOST};

    const SECRET: &str = "mtls_pop c2VjcmV0LXBheWxvYWQ";

    fn sent() -> Request<()> {
        Request::builder()
            .method(Method::POST)
            .uri("/v1.0/me?x=1")
            .header(HOST, "graph.microsoft.com")
            .header(AUTHORIZATION, SECRET)
            .header("x-request-id", "r1")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_returned_head_gets_its_absolute_uri_back_and_loses_host() {
        let absolute = Uri::from_static("https://graph.microsoft.com/v1.0/me?x=1");
        let mut slot = None;
        Keeper::new(Some(&mut slot)).returned(sent(), Some(absolute.clone()));
        let again = slot.unwrap().into_request(UpstreamBody::empty());
        assert_eq!(again.method(), Method::POST);
        assert_eq!(again.uri(), &absolute);
        assert_eq!(again.version(), Version::HTTP_11);
        assert!(again.headers().get(HOST).is_none());
        assert_eq!(again.headers()["x-request-id"], "r1");
        assert_eq!(again.headers()[AUTHORIZATION], SECRET);
    }

    #[test]
    fn a_copy_is_taken_once_into_the_slot() {
        // No slot: nothing to keep, nothing copied (nowhere to put it).
        Keeper::new(None).before_consuming(&sent(), None);
        Keeper::new(None).returned(sent(), None);

        let mut slot = None;
        let mut keeper = Keeper::new(Some(&mut slot));
        let absolute = Uri::from_static("https://graph.microsoft.com/v1.0/me?x=1");
        keeper.before_consuming(&sent(), Some(&absolute));
        let mut second = sent();
        second
            .headers_mut()
            .insert("x-request-id", HeaderValue::from_static("r2"));
        keeper.before_consuming(&second, None);
        let kept = slot.unwrap().into_request(UpstreamBody::empty());
        assert_eq!(kept.headers()["x-request-id"], "r1", "the first copy stays");
        assert_eq!(kept.uri(), &absolute);
    }

    #[test]
    fn debug_names_the_headers_but_never_shows_the_token() {
        let shown = format!("{:?}", KeptHead::copy(&sent(), None));
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
