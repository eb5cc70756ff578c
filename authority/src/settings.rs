//! Run-time settings of issued tokens: lifetime, `refresh_in`, and whether the response carries
//! its numbers as JSON strings (as some ESTS endpoints do). Changeable while the authority runs.

use std::sync::Mutex;
use std::time::Duration;

use crate::faults::lock;

/// ESTS's usual access-token lifetime: the shared vectors show `expires_in` 3599.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// What every token issued from now on looks like.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenSettings {
    /// `exp - iat` of issued tokens, and `expires_in`.
    pub lifetime: Duration,
    /// `ext_expires_in`; `None` means equal to `lifetime`.
    pub ext_lifetime: Option<Duration>,
    /// `refresh_in`; `None` leaves the field out of the response.
    pub refresh_in: Option<Duration>,
    /// Send `expires_in`, `ext_expires_in`, `refresh_in` as numeric strings.
    pub numbers_as_strings: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            lifetime: DEFAULT_TOKEN_LIFETIME,
            ext_lifetime: None,
            refresh_in: None,
            numbers_as_strings: false,
        }
    }
}

/// Shared, lock-protected [`TokenSettings`].
#[derive(Debug, Default)]
pub struct Settings {
    tokens: Mutex<TokenSettings>,
}

impl Settings {
    /// A copy of the current settings.
    pub fn tokens(&self) -> TokenSettings {
        lock(&self.tokens).clone()
    }

    /// Replace the settings wholesale.
    pub fn set_tokens(&self, settings: TokenSettings) {
        *lock(&self.tokens) = settings;
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        lock(&self.tokens).lifetime = lifetime;
    }

    /// `refresh_in` of responses from now on (`None`: leave it out).
    pub fn set_refresh_in(&self, refresh_in: Option<Duration>) {
        lock(&self.tokens).refresh_in = refresh_in;
    }

    /// Whether response numbers are sent as strings from now on.
    pub fn set_numbers_as_strings(&self, as_strings: bool) {
        lock(&self.tokens).numbers_as_strings = as_strings;
    }
}
