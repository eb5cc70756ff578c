//! The claims of tokens this authority issues (and so accepts back as FIC assertions and at the
//! resource). Shaped like Entra ID v2 access tokens.

use serde::{Deserialize, Serialize};

/// RFC 8705 §3.1 confirmation: the SHA-256 thumbprint of the bound certificate's DER.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `https://login.microsoftonline.com/{tid}/v2.0`
    pub iss: String,
    /// The resource (audience) the token is for, e.g. `https://graph.microsoft.com`.
    pub aud: String,
    /// The subject: the object id of the identity the token was issued to.
    pub sub: String,
    pub tid: String,
    pub oid: String,
    /// The client (application) id that obtained the token.
    pub appid: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Unique token id.
    pub uti: String,
    pub ver: String,
    /// Present only on mTLS PoP tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}
