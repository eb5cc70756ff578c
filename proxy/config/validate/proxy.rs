//! `network.proxy`: the outbound HTTP proxy from the file, else from `https_proxy` /
//! `HTTPS_PROXY` and `no_proxy` / `NO_PROXY` (curl's order: lowercase first). `none` turns it
//! off whatever the environment says. Credentials come from the URL's userinfo or from the
//! variable named by `credentials_env`; no error ever shows them.

use serde_saphyr::Location;
use zeroize::Zeroizing;

use crate::config::no_proxy::NoProxy;
use crate::config::outbound_proxy::{OutboundProxy, ProxyAuthorization, ProxyUrl};
use crate::config::schema::{RawProxy, S};

use super::Ctx;

/// Proxy URL variables, in the order curl reads them.
const PROXY_ENV: [&str; 2] = ["https_proxy", "HTTPS_PROXY"];
/// Bypass list variables, in the order curl reads them.
const NO_PROXY_ENV: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// The proxy in force. `at` is where env errors are reported when the key is absent.
pub(super) fn proxy(
    cx: &mut Ctx<'_>,
    at: Location,
    raw: Option<&S<RawProxy>>,
) -> Option<OutboundProxy> {
    let at = raw.map_or(at, |r| r.referenced);
    let (url, no_proxy, credentials_env) = match raw.map(|r| &r.value) {
        None => (None, None, None),
        Some(RawProxy::Url(text)) => (Some((text.clone(), at)), None, None),
        Some(RawProxy::Settings(s)) => (
            s.url.as_ref().map(|u| (u.value.clone(), u.referenced)),
            s.no_proxy.as_ref(),
            s.credentials_env.as_ref(),
        ),
    };
    // The URL may carry credentials in its userinfo: our copy of it is zeroized.
    let (text, url_at, origin) = match url {
        Some((text, _)) if text.trim().eq_ignore_ascii_case("none") => return None,
        Some((text, url_at)) => (Zeroizing::new(text), url_at, "network.proxy".to_owned()),
        None => match first_env(cx, &PROXY_ENV) {
            Some((name, text)) => (
                Zeroizing::new(text),
                at,
                format!("environment variable {name}"),
            ),
            None => return None,
        },
    };
    let url = match ProxyUrl::parse(&text) {
        Ok(u) => u,
        Err(e) => {
            cx.error(url_at, format!("{origin}: {e}"));
            return None;
        }
    };
    let no_proxy = match no_proxy {
        Some(list) => {
            let mut items = Vec::new();
            for item in &list.value {
                match NoProxy::parse([item.value.as_str()]) {
                    Ok(_) => items.push(item.value.as_str()),
                    Err(e) => cx.error(item.referenced, e),
                }
            }
            // Every item left parsed on its own above.
            NoProxy::parse(items).unwrap_or_default()
        }
        None => match first_env(cx, &NO_PROXY_ENV) {
            Some((name, text)) => NoProxy::parse([text.as_str()]).unwrap_or_else(|e| {
                cx.error(at, format!("environment variable {name}: {e}"));
                NoProxy::default()
            }),
            None => NoProxy::default(),
        },
    };
    let authorization = credentials_env.and_then(|name| credentials(cx, name, &url));
    Some(OutboundProxy::new(url, authorization, no_proxy, origin))
}

/// The first of `names` that is set and not empty.
fn first_env(cx: &Ctx<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|n| cx.env(n).map(|v| (*n, v)))
}

/// `user:password` from the variable `name` names. Errors name the variable, never its value.
fn credentials(cx: &mut Ctx<'_>, name: &S<String>, url: &ProxyUrl) -> Option<ProxyAuthorization> {
    let var = name.value.trim();
    if var.is_empty() {
        cx.error(
            name.referenced,
            "credentials_env must name an environment variable (e.g. CORP_PROXY_AUTH)",
        );
        return None;
    }
    if url.authorization.is_some() {
        cx.error(
            name.referenced,
            "the proxy URL already carries credentials; give them either in the URL or in credentials_env",
        );
        return None;
    }
    // `user:password`: zeroized when this returns (the environment's own copy cannot be).
    let Some(value) = cx.env(var).map(Zeroizing::new) else {
        cx.error(
            name.referenced,
            format!("environment variable {var} (credentials_env) is not set"),
        );
        return None;
    };
    match value.split_once(':') {
        Some((user, password)) if !user.is_empty() => {
            Some(ProxyAuthorization::basic(user, password))
        }
        _ => {
            cx.error(
                name.referenced,
                format!("environment variable {var} (credentials_env) must hold user:password"),
            );
            None
        }
    }
}
