//! Listener and admin addresses, inbound TLS files.

use std::net::SocketAddr;

use crate::config::model::{InboundTls, Listener};
use crate::config::schema::{RawAdmin, RawInboundTls, RawListener, S};
use crate::credential::cert_files::{self, FileRole};

use super::Ctx;

fn parse_addr(cx: &mut Ctx<'_>, raw: &S<String>) -> Option<SocketAddr> {
    match raw.value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.error(
                raw.referenced,
                format!(
                    "`{}` is not an ip:port address (e.g. 127.0.0.1:3128)",
                    raw.value
                ),
            );
            None
        }
    }
}

/// The listeners: at least one, each address valid and distinct.
pub(super) fn listeners(cx: &mut Ctx<'_>, raw: &S<Vec<S<RawListener>>>) -> Vec<Listener> {
    if raw.value.is_empty() {
        cx.error(raw.referenced, "at least one listener is required");
    }
    let mut out: Vec<Listener> = Vec::new();
    let mut seen: Vec<(SocketAddr, u64)> = Vec::new();
    for l in &raw.value {
        let address = parse_addr(cx, &l.value.address);
        let tls = l.value.tls.as_ref().and_then(|t| inbound_tls(cx, t));
        let Some(address) = address else { continue };
        if let Some((_, line)) = seen.iter().find(|(a, _)| *a == address) {
            cx.error(
                l.value.address.referenced,
                format!("duplicate listener address {address} (first at line {line})"),
            );
            continue;
        }
        seen.push((address, l.value.address.referenced.line()));
        if l.value.tls.is_none() || tls.is_some() {
            out.push(Listener { address, tls });
        }
    }
    out
}

fn inbound_tls(cx: &mut Ctx<'_>, raw: &S<RawInboundTls>) -> Option<InboundTls> {
    let t = &raw.value;
    let server = match cert_files::load_binding_cert(
        &cx.path(&t.cert_file.value),
        &cx.path(&t.key_file.value),
    ) {
        Ok(b) => Some(b),
        Err(e) => {
            let at = match e.role() {
                FileRole::Certificate => t.cert_file.referenced,
                FileRole::Key => t.key_file.referenced,
            };
            cx.error(at, e.to_string());
            None
        }
    };
    let client_ca = match &t.client_ca_file {
        None => Some(None),
        Some(ca) => match cert_files::load_cert_chain(&cx.path(&ca.value)) {
            Ok(certs) => Some(Some(certs)),
            Err(e) => {
                cx.error(ca.referenced, e.to_string());
                None
            }
        },
    };
    Some(InboundTls {
        server: server?,
        client_ca: client_ca?,
    })
}

/// The admin address; it must not collide with a listener.
pub(super) fn admin(
    cx: &mut Ctx<'_>,
    raw: &S<RawAdmin>,
    listeners: &S<Vec<S<RawListener>>>,
) -> Option<SocketAddr> {
    let addr = parse_addr(cx, &raw.value.address)?;
    let clash = listeners
        .value
        .iter()
        .find(|l| l.value.address.value.parse::<SocketAddr>().ok() == Some(addr));
    if let Some(l) = clash {
        cx.error(
            raw.value.address.referenced,
            format!(
                "admin address {addr} is also a listener address (line {})",
                l.value.address.referenced.line()
            ),
        );
        return None;
    }
    Some(addr)
}
