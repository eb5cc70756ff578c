//! Minting the granted token and the success body: `token_type`, `expires_in`, `ext_expires_in`,
//! optional `refresh_in`, `access_token` — the keys of `vectors/ests-cc-token-mtls-pop-200.json`.

use super::grant::{Grant, TokenKind};
use crate::settings::TokenSettings;
use crate::signing::SigningKeys;
use crate::tokens;

/// The success body for `grant`, or why the token could not be signed.
pub fn response_body(
    keys: &SigningKeys,
    settings: &TokenSettings,
    grant: &Grant,
) -> Result<serde_json::Value, String> {
    let minted = tokens::mint(
        keys,
        settings,
        &grant.subject,
        &grant.audience,
        grant.cnf.clone(),
    )?;
    let number = |secs: u64| {
        if settings.numbers_as_strings {
            serde_json::Value::String(secs.to_string())
        } else {
            serde_json::Value::from(secs)
        }
    };
    let lifetime = settings.lifetime.as_secs();
    let mut body = serde_json::Map::new();
    body.insert(
        "token_type".into(),
        match grant.kind {
            TokenKind::MtlsPop => "mtls_pop",
            TokenKind::Bearer => "Bearer",
        }
        .into(),
    );
    body.insert("expires_in".into(), number(lifetime));
    body.insert(
        "ext_expires_in".into(),
        number(settings.ext_lifetime.map_or(lifetime, |d| d.as_secs())),
    );
    if let Some(refresh_in) = settings.refresh_in {
        body.insert("refresh_in".into(), number(refresh_in.as_secs()));
    }
    body.insert(
        "access_token".into(),
        serde_json::Value::String(minted.jwt.to_string()),
    );
    Ok(serde_json::Value::Object(body))
}
