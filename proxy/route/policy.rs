//! What the data plane enforces per route besides the token: who may call it and how large a
//! request body may be. Built from the validated config; carried by the route's slot.

use crate::access::{AllowList, Caller};

/// A route's caller rules and body limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// `None`: anyone who reaches a listener; `Some`: only callers some rule admits.
    pub allow: Option<AllowList>,
    /// Most request body bytes (413 beyond); `None`: no per-route limit.
    pub max_body_bytes: Option<u64>,
}

impl RoutePolicy {
    /// The policy `routes.yaml` gives `route`.
    pub fn of(route: &crate::config::model::Route) -> Self {
        Self {
            allow: route.allow.clone(),
            max_body_bytes: route.max_body_bytes,
        }
    }

    /// Whether `caller` may use the route.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.allow.as_ref().is_none_or(|list| list.admits(caller))
    }
}
