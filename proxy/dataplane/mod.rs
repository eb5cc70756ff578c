//! Listeners, request forwarding, header rewriting, upstream mTLS clients.
