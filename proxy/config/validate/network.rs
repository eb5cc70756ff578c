//! Outbound network settings: IMDS endpoint, `resolve` overrides, extra CA files, proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::certs::cert_files;
use crate::config::host_pattern::parse_host_port;
use crate::config::model::Network;
use crate::config::schema::{RawNetwork, S};
use crate::identity::imds_endpoint::{DEFAULT_IMDS_BASE, IMDS_BASE_ENV};

use super::Ctx;

pub(super) fn network(cx: &mut Ctx<'_>, raw: Option<&S<RawNetwork>>) -> Network {
    let at = raw.map_or(serde_saphyr::Location::UNKNOWN, |r| r.referenced);
    let raw = raw.map(|r| &r.value);
    let proxy = super::proxy::proxy(cx, at, raw.and_then(|r| r.proxy.as_ref()));
    let imds_endpoint = imds_endpoint(cx, raw.and_then(|r| r.imds_endpoint.as_ref()));
    let mut resolve = BTreeMap::new();
    if let Some(map) = raw.and_then(|r| r.resolve.as_ref()) {
        for (key, value) in &map.value.0 {
            let target = match parse_host_port(&key.value) {
                // IPv6 literals keep their brackets so the key stays unambiguous.
                Ok((host, Some(port))) if host.contains(':') => Some(format!("[{host}]:{port}")),
                Ok((host, Some(port))) => Some(format!("{host}:{port}")),
                Ok((_, None)) | Err(_) => {
                    cx.error(
                        key.referenced,
                        format!(
                            "resolve key `{}` must be host:port (e.g. login.microsoftonline.com:443)",
                            key.value
                        ),
                    );
                    None
                }
            };
            let addr = match value.value.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    cx.error(
                        value.referenced,
                        format!(
                            "resolve value `{}` must be ip:port (e.g. 127.0.0.1:8443)",
                            value.value
                        ),
                    );
                    None
                }
            };
            if let (Some(t), Some(a)) = (target, addr)
                && resolve.insert(t.clone(), a).is_some()
            {
                cx.error(key.referenced, format!("resolve key `{t}` appears twice"));
            }
        }
    }
    let mut extra_ca = Vec::new();
    if let Some(files) = raw.and_then(|r| r.extra_ca_files.as_ref()) {
        for f in &files.value {
            match cert_files::load_cert_chain(&cx.path(&f.value)) {
                Ok(certs) => extra_ca.extend(certs),
                Err(e) => cx.error(f.referenced, e.to_string()),
            }
        }
    }
    Network {
        imds_endpoint,
        resolve,
        extra_ca,
        proxy,
    }
}

fn imds_endpoint(cx: &mut Ctx<'_>, raw: Option<&S<String>>) -> http::Uri {
    let fallback = || http::Uri::from_static(DEFAULT_IMDS_BASE);
    let (text, at, origin) = match (cx.env(IMDS_BASE_ENV), raw) {
        (Some(v), r) => (
            v,
            r.map(|r| r.referenced)
                .unwrap_or(serde_saphyr::Location::UNKNOWN),
            format!("environment variable {IMDS_BASE_ENV}"),
        ),
        (None, Some(r)) => (r.value.clone(), r.referenced, "imds_endpoint".to_owned()),
        (None, None) => return fallback(),
    };
    match text.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none() =>
        {
            uri
        }
        _ => {
            cx.error(
                at,
                format!(
                    "{origin} `{text}` must be an http(s) base URL like http://169.254.169.254"
                ),
            );
            fallback()
        }
    }
}
