//! Flow rules: which identities a vanilla route or each FIC leg may use, the token types each
//! allows, and the mTLS host rule for confidential clients that will talk to an mtlsauth host.

use serde_saphyr::Location;

use crate::config::model::{Flow, IdentityKind};
use crate::config::schema::{FlowKind, RawRoute, S};
use crate::identity::authority_host::{self, DEFAULT_AUTHORITY_HOST, HostRuleError};
use crate::identity::mi_source::{self, MiSourceKind};
use crate::identity::token::TokenType;

use super::Ctx;
use super::identities::Identities;

/// The verbatim refusal of a managed identity as FIC leg 2.
pub(crate) const MI_AS_LEG2: &str =
    "managed identities have no client-assertion API: FIC leg 2 must be a confidential client";

/// Where an identity reference sits and what it refers to.
struct Ref<'a> {
    name: &'a S<String>,
    kind: IdentityKind,
    has_certificate: bool,
    mi_source: Option<MiSourceKind>,
}

/// A managed identity on a source other than IMDS cannot issue mTLS PoP: MSAL's error.
fn mi_pop_rule(cx: &mut Ctx<'_>, id: &Ref<'_>, at: Location, key: &str) {
    if let Some(kind) = id.mi_source
        && let Err(e) = mi_source::check_mtls_pop(kind)
    {
        cx.error(
            at,
            format!(
                "managed identity `{}` uses source {kind}, which issues Bearer tokens only ({e}): set `{key}: bearer`",
                id.name.value
            ),
        );
    }
}

fn lookup<'a>(cx: &mut Ctx<'_>, identities: &Identities, name: &'a S<String>) -> Option<Ref<'a>> {
    match identities.get(&name.value) {
        Some(e) => Some(Ref {
            name,
            kind: e.kind,
            has_certificate: e.has_certificate,
            mi_source: e.mi_source,
        }),
        None => {
            cx.error(
                name.referenced,
                format!("unknown identity `{}` ({})", name.value, identities.names()),
            );
            None
        }
    }
}

fn only_for(cx: &mut Ctx<'_>, value: Option<Location>, key: &str, flow: &str) {
    if let Some(at) = value {
        cx.error(at, format!("`{key}` is only for flow: {flow}"));
    }
}

pub(super) fn flow(
    cx: &mut Ctx<'_>,
    r: &RawRoute,
    identities: &Identities,
    token_type: TokenType,
) -> Option<Flow> {
    let at = |v: &Option<S<String>>| v.as_ref().map(|v| v.referenced);
    match r.flow.value {
        FlowKind::Vanilla => {
            only_for(cx, at(&r.leg1), "leg1", "fic");
            only_for(cx, at(&r.leg2), "leg2", "fic");
            only_for(
                cx,
                r.leg1_token_type.as_ref().map(|v| v.referenced),
                "leg1_token_type",
                "fic",
            );
            let Some(name) = &r.identity else {
                cx.error(r.flow.referenced, "flow vanilla needs `identity`");
                return None;
            };
            let id = lookup(cx, identities, name)?;
            vanilla_identity(cx, r, identities, &id, token_type);
            Some(Flow::Vanilla {
                identity: name.value.clone(),
            })
        }
        FlowKind::Fic => {
            only_for(cx, at(&r.identity), "identity", "vanilla");
            if r.leg1.is_none() || r.leg2.is_none() {
                cx.error(r.flow.referenced, "flow fic needs `leg1` and `leg2`");
            }
            let leg1 = r.leg1.as_ref().and_then(|n| lookup(cx, identities, n));
            let leg2 = r.leg2.as_ref().and_then(|n| lookup(cx, identities, n));
            let leg1_token_type = r
                .leg1_token_type
                .as_ref()
                .map_or(TokenType::MtlsPop, |t| t.value);
            if let Some(t) = r
                .leg1_token_type
                .as_ref()
                .filter(|t| t.value == TokenType::Bearer)
                && token_type == TokenType::MtlsPop
            {
                cx.error(
                    t.referenced,
                    "leg1_token_type: bearer gives a Bearer leg 2 only: set `token_type: bearer`",
                );
            }
            if let Some(l1) = &leg1 {
                leg1_identity(cx, r, identities, l1, leg1_token_type);
            }
            if let Some(l2) = &leg2 {
                leg2_identity(cx, identities, l2, leg1_token_type);
            }
            Some(Flow::Fic {
                leg1: leg1?.name.value.clone(),
                leg2: leg2?.name.value.clone(),
                leg1_token_type,
            })
        }
    }
}

fn certificate_less(cx: &mut Ctx<'_>, id: &Ref<'_>, role: &str) {
    cx.error(
        id.name.referenced,
        format!(
            "identity `{}` is a confidential client without a certificate, so it cannot be {role}: it can only be a FIC leg 2 (give it `certificate:` to use it here)",
            id.name.value
        ),
    );
}

fn vanilla_identity(
    cx: &mut Ctx<'_>,
    r: &RawRoute,
    identities: &Identities,
    id: &Ref<'_>,
    token_type: TokenType,
) {
    match id.kind {
        IdentityKind::ManagedIdentity if token_type == TokenType::MtlsPop => {
            let at = r
                .token_type
                .as_ref()
                .map_or(id.name.referenced, |t| t.referenced);
            mi_pop_rule(cx, id, at, "token_type");
        }
        IdentityKind::ConfidentialClient if !id.has_certificate => {
            certificate_less(cx, id, "a vanilla identity");
        }
        IdentityKind::ConfidentialClient if token_type == TokenType::MtlsPop => {
            mtls_host_rule(cx, identities, id);
        }
        IdentityKind::WorkloadIdentity if token_type == TokenType::MtlsPop => {
            let at = r
                .token_type
                .as_ref()
                .map_or(id.name.referenced, |t| t.referenced);
            cx.error(
                at,
                format!(
                    "workload identity `{}` issues Bearer tokens only: set `token_type: bearer`",
                    id.name.value
                ),
            );
        }
        _ => {}
    }
}

fn leg1_identity(
    cx: &mut Ctx<'_>,
    r: &RawRoute,
    identities: &Identities,
    id: &Ref<'_>,
    leg1_token_type: TokenType,
) {
    match id.kind {
        IdentityKind::ManagedIdentity if leg1_token_type == TokenType::MtlsPop => {
            let at = r
                .leg1_token_type
                .as_ref()
                .map_or(id.name.referenced, |t| t.referenced);
            mi_pop_rule(cx, id, at, "leg1_token_type");
        }
        IdentityKind::Static => cx.error(
            id.name.referenced,
            format!(
                "static identity `{}` cannot take part in a FIC flow: its token is fixed, not acquired for api://AzureADTokenExchange",
                id.name.value
            ),
        ),
        IdentityKind::ConfidentialClient if !id.has_certificate => {
            certificate_less(cx, id, "FIC leg 1");
        }
        IdentityKind::ConfidentialClient => {
            if let Some(t) = r.leg1_token_type.as_ref().filter(|t| t.value == TokenType::Bearer) {
                cx.error(
                    t.referenced,
                    format!(
                        "leg1_token_type: bearer needs a managed identity or workload identity leg 1; certificate app `{}` is always mtls_pop as leg 1",
                        id.name.value
                    ),
                );
            } else {
                mtls_host_rule(cx, identities, id);
            }
        }
        IdentityKind::WorkloadIdentity if leg1_token_type == TokenType::MtlsPop => {
            let at = r
                .leg1_token_type
                .as_ref()
                .map_or(id.name.referenced, |t| t.referenced);
            cx.error(
                at,
                format!(
                    "workload identity `{}` issues Bearer tokens only: set `leg1_token_type: bearer` (and `token_type: bearer`)",
                    id.name.value
                ),
            );
        }
        _ => {}
    }
}

fn leg2_identity(cx: &mut Ctx<'_>, identities: &Identities, id: &Ref<'_>, leg1: TokenType) {
    match id.kind {
        IdentityKind::ManagedIdentity => cx.error(id.name.referenced, MI_AS_LEG2),
        IdentityKind::Static | IdentityKind::WorkloadIdentity => cx.error(
            id.name.referenced,
            format!(
                "FIC leg 2 must be a confidential client: `{}` is a {} identity, which cannot present a client assertion",
                id.name.value, id.kind
            ),
        ),
        // Leg 2 after an mTLS PoP leg 1 always goes to the mTLS host with the leg-1 certificate.
        IdentityKind::ConfidentialClient if leg1 == TokenType::MtlsPop => {
            mtls_host_rule(cx, identities, id);
        }
        IdentityKind::ConfidentialClient => {}
    }
}

/// A confidential client that will talk to an mtlsauth host: its authority host, region and
/// tenant must pass protocol.md §1.
fn mtls_host_rule(cx: &mut Ctx<'_>, identities: &Identities, id: &Ref<'_>) {
    let Some(entry) = identities.get(&id.name.value) else {
        return;
    };
    let host = entry
        .authority_host
        .as_ref()
        .map_or(DEFAULT_AUTHORITY_HOST, |h| h.value.as_str());
    let region = entry
        .region
        .as_ref()
        .map(|r| r.value.as_str())
        .filter(|r| authority_host::is_valid_region(r)); // bad regions are reported on the identity
    match authority_host::mtls_token_host(host, region) {
        Ok(_) => {}
        // Malformed hosts are reported on the identity itself.
        Err(HostRuleError::NotAHostName(_)) => {}
        Err(e) => {
            let at = entry
                .authority_host
                .as_ref()
                .map_or(id.name.referenced, |h| h.referenced);
            cx.error(
                at,
                format!(
                    "{e} (identity `{}` is used with an mtlsauth token host)",
                    id.name.value
                ),
            );
        }
    }
}
