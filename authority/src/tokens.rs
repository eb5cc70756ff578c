//! Minting the access tokens this authority issues (token endpoint, IMDS v1, App Service).

use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::claims::{Claims, Confirmation};
use crate::settings::TokenSettings;
use crate::signing::SigningKeys;

/// The audience of FIC leg-1 tokens (`api://AzureADTokenExchange/.default`).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Seconds since the Unix epoch (0 if the clock is before 1970, which no test machine is).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `iss` of every token issued for `tenant_id` (and so what a federated credential trusts).
pub fn issuer_for(tenant_id: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant_id}/v2.0")
}

/// Who a token is issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    pub tenant_id: String,
    /// `oid` and `sub`.
    pub object_id: String,
    /// `appid`.
    pub client_id: String,
}

/// A signed token and the claims in it.
pub struct MintedJwt {
    pub jwt: Zeroizing<String>,
    pub claims: Claims,
}

impl std::fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedJwt")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// Signs an access token for `audience`; `cnf_x5t` binds it to a certificate (mTLS PoP).
pub fn mint(
    keys: &SigningKeys,
    settings: &TokenSettings,
    subject: &TokenSubject,
    audience: &str,
    cnf_x5t: Option<String>,
) -> Result<MintedJwt, String> {
    let now = unix_now();
    let claims = Claims {
        iss: issuer_for(&subject.tenant_id),
        aud: audience.to_string(),
        sub: subject.object_id.clone(),
        tid: subject.tenant_id.clone(),
        oid: subject.object_id.clone(),
        appid: subject.client_id.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(settings.lifetime.as_secs()),
        uti: uuid::Uuid::new_v4().simple().to_string(),
        ver: "2.0".into(),
        cnf: cnf_x5t.map(|x5t_s256| Confirmation { x5t_s256 }),
    };
    let jwt = Zeroizing::new(keys.sign(&claims)?);
    Ok(MintedJwt { jwt, claims })
}
