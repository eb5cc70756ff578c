//! A route's `allow:` rules, and whether the listeners can ever present what they ask about.

use crate::access::{AllowList, AllowRule};
use crate::config::model::{Listener, UnixListener};
use crate::config::schema::{RawAllowRule, RawRoute, S};

use super::Ctx;

/// The keys a rule may have (exactly one per rule).
const RULE_KEYS: &str = "cidr, subject, dns_san, uri_san, uid or gid";

/// `Some(None)`: no `allow` (anyone); `Some(Some(list))`; `None`: an error was recorded.
pub(super) fn allow(
    cx: &mut Ctx<'_>,
    raw: Option<&S<Vec<S<RawAllowRule>>>>,
) -> Option<Option<AllowList>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    if raw.value.is_empty() {
        cx.error(
            raw.referenced,
            "`allow` is empty, so no caller could use the route; remove it to allow anyone, or list rules",
        );
        return None;
    }
    let before = cx.errors.len();
    let rules: Vec<AllowRule> = raw.value.iter().filter_map(|r| rule(cx, r)).collect();
    (cx.errors.len() == before).then_some(Some(AllowList(rules)))
}

fn rule(cx: &mut Ctx<'_>, raw: &S<RawAllowRule>) -> Option<AllowRule> {
    let r = &raw.value;
    let given = [
        r.cidr.is_some(),
        r.subject.is_some(),
        r.dns_san.is_some(),
        r.uri_san.is_some(),
        r.uid.is_some(),
        r.gid.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        cx.error(
            raw.referenced,
            format!(
                "an allow rule has exactly one of {RULE_KEYS}; list several rules to allow any of them"
            ),
        );
        return None;
    }
    let mut fail = |at: &S<String>, message: String| {
        cx.error(at.referenced, message);
        None
    };
    if let Some(v) = &r.cidr {
        return match v.value.parse() {
            Ok(net) => Some(AllowRule::Cidr(net)),
            Err(e) => fail(v, format!("allow cidr: {e}")),
        };
    }
    if let Some(v) = &r.subject {
        return match v.value.parse() {
            Ok(dn) => Some(AllowRule::Subject(dn)),
            Err(e) => fail(v, format!("allow subject `{}`: {e}", v.value)),
        };
    }
    if let Some(v) = &r.dns_san {
        let name = v.value.strip_suffix('.').unwrap_or(&v.value);
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
        return if valid {
            Some(AllowRule::dns_san(name))
        } else {
            fail(v, format!("allow dns_san `{}` is not a DNS name", v.value))
        };
    }
    if let Some(v) = &r.uri_san {
        let valid =
            v.value.contains(':') && !v.value.chars().any(|c| c.is_whitespace() || c.is_control());
        return if valid {
            Some(AllowRule::UriSan(v.value.clone()))
        } else {
            fail(
                v,
                format!(
                    "allow uri_san `{}` is not a URI (e.g. spiffe://corp/ns/app/sa/web)",
                    v.value
                ),
            )
        };
    }
    let id = r.uid.as_ref().or(r.gid.as_ref())?;
    let Ok(n) = u32::try_from(id.value) else {
        cx.error(
            id.referenced,
            format!("allow uid/gid {} is beyond 4294967295", id.value),
        );
        return None;
    };
    Some(if r.uid.is_some() {
        AllowRule::Uid(n)
    } else {
        AllowRule::Gid(n)
    })
}

/// A certificate rule with no mTLS listener, a uid/gid rule with no Unix listener, or a cidr rule
/// with no TCP listener can never admit anyone: an error at the rule, so a typo in the listeners
/// does not silently lock a route (or, worse, leave an operator believing a rule protects it).
pub(super) fn check_listeners_for_rules(
    cx: &mut Ctx<'_>,
    routes: &S<Vec<S<RawRoute>>>,
    listeners: &[Listener],
    unix: &[UnixListener],
) {
    let mtls = listeners.iter().any(Listener::requires_client_cert);
    let tcp = !listeners.is_empty();
    let local = !unix.is_empty();
    for route in &routes.value {
        let Some(allow) = &route.value.allow else {
            continue;
        };
        for rule in &allow.value {
            let r = &rule.value;
            let problem = if (r.subject.is_some() || r.dns_san.is_some() || r.uri_san.is_some())
                && !mtls
            {
                Some(
                    "a certificate rule needs a listener with `tls.client_ca_file` (inbound mTLS); none is configured",
                )
            } else if (r.uid.is_some() || r.gid.is_some()) && !local {
                Some("a uid/gid rule needs a `unix` listener; none is configured")
            } else if r.cidr.is_some() && !tcp {
                Some("a cidr rule needs an `address` listener; only unix listeners are configured")
            } else {
                None
            };
            if let Some(p) = problem {
                cx.error(
                    rule.referenced,
                    format!("route `{}`: {p}", route.value.name.value),
                );
            }
        }
    }
}
