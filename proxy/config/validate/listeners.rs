//! Listener and admin addresses, inbound TLS files.

use std::net::SocketAddr;

use crate::certs::cert_files::{self, FileRole};
use crate::config::limits::DEFAULT_UNIX_SOCKET_MODE;
use crate::config::model::{InboundTls, Listener, UnixListener};
use crate::config::schema::{RawAdmin, RawInboundTls, RawListener, S};

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

/// The listeners: at least one, each with exactly one of `address` / `unix`, addresses and
/// socket paths distinct.
pub(super) fn listeners(
    cx: &mut Ctx<'_>,
    raw: &S<Vec<S<RawListener>>>,
) -> (Vec<Listener>, Vec<UnixListener>) {
    if raw.value.is_empty() {
        cx.error(raw.referenced, "at least one listener is required");
    }
    let mut out: Vec<Listener> = Vec::new();
    let mut unix_out: Vec<UnixListener> = Vec::new();
    let mut seen: Vec<(SocketAddr, u64)> = Vec::new();
    for l in &raw.value {
        let address = match (&l.value.address, &l.value.unix) {
            (Some(a), None) => a,
            (None, Some(path)) => {
                if let Some(u) = unix_listener(cx, &l.value, path, &unix_out) {
                    unix_out.push(u);
                }
                continue;
            }
            (Some(_), Some(path)) => {
                cx.error(
                    path.referenced,
                    "a listener has either `address` or `unix`, not both",
                );
                continue;
            }
            (None, None) => {
                cx.error(
                    l.referenced,
                    "a listener needs `address` (ip:port) or `unix` (a socket path)",
                );
                continue;
            }
        };
        let intercept = l
            .value
            .intercept
            .as_ref()
            .and_then(|i| super::intercept::intercept(cx, i));
        if let Some(mode) = &l.value.mode {
            cx.error(mode.referenced, "`mode` only applies to `unix` listeners");
        }
        let address_value = parse_addr(cx, address);
        let tls = l.value.tls.as_ref().and_then(|t| inbound_tls(cx, t));
        let Some(address_value) = address_value else {
            continue;
        };
        if let Some((_, line)) = seen.iter().find(|(a, _)| *a == address_value) {
            cx.error(
                address.referenced,
                format!("duplicate listener address {address_value} (first at line {line})"),
            );
            continue;
        }
        seen.push((address_value, address.referenced.line()));
        if (l.value.tls.is_none() || tls.is_some())
            && (l.value.intercept.is_none() || intercept.is_some())
        {
            out.push(Listener {
                address: address_value,
                tls,
                intercept,
            });
        }
    }
    (out, unix_out)
}

/// A `unix:` listener: a non-empty path, no TLS, an octal `mode` of at most 0777.
fn unix_listener(
    cx: &mut Ctx<'_>,
    raw: &RawListener,
    path: &S<String>,
    earlier: &[UnixListener],
) -> Option<UnixListener> {
    if let Some(tls) = &raw.tls {
        cx.error(
            tls.referenced,
            "`tls` is not available on `unix` listeners (the kernel authenticates local callers)",
        );
    }
    if let Some(intercept) = &raw.intercept {
        cx.error(
            intercept.referenced,
            "`intercept` is available on `address` listeners only, not on `unix` listeners",
        );
    }
    if path.value.trim().is_empty() {
        cx.error(path.referenced, "the unix socket path is empty");
        return None;
    }
    let resolved = cx.path(&path.value);
    if earlier.iter().any(|u| u.path == resolved) {
        cx.error(
            path.referenced,
            format!("duplicate unix listener path {}", path.value),
        );
        return None;
    }
    let mode = match &raw.mode {
        None => DEFAULT_UNIX_SOCKET_MODE,
        Some(m) => {
            let digits = m.value.strip_prefix("0o").unwrap_or(&m.value);
            match u32::from_str_radix(digits, 8) {
                Ok(v) if v <= 0o777 => v,
                _ => {
                    cx.error(
                        m.referenced,
                        format!(
                            "mode `{}` is not an octal permission between 0000 and 0777 (e.g. \"0660\")",
                            m.value
                        ),
                    );
                    return None;
                }
            }
        }
    };
    Some(UnixListener {
        path: resolved,
        mode,
    })
}

fn inbound_tls(cx: &mut Ctx<'_>, raw: &S<RawInboundTls>) -> Option<InboundTls> {
    let t = &raw.value;
    let key_file = cx.path(&t.key_file.value);
    let allow_insecure_key = t
        .allow_insecure_key_permissions
        .as_ref()
        .is_some_and(|v| v.value);
    let server = match cert_files::load_binding_cert(&cx.path(&t.cert_file.value), &key_file) {
        // Anyone on the host could copy the key and impersonate the listener to its callers.
        Ok(_)
            if !allow_insecure_key
                && super::identities::world_readable_key(
                    cx,
                    &t.key_file,
                    &key_file,
                    "key_file",
                    "on the listener's `tls`",
                ) =>
        {
            None
        }
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
    let clash = listeners.value.iter().find_map(|l| {
        let a = l.value.address.as_ref()?;
        (a.value.parse::<SocketAddr>().ok() == Some(addr)).then_some(a)
    });
    if let Some(a) = clash {
        cx.error(
            raw.value.address.referenced,
            format!(
                "admin address {addr} is also a listener address (line {})",
                a.referenced.line()
            ),
        );
        return None;
    }
    Some(addr)
}
