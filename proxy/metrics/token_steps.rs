//! How long each step of a token acquisition took, by identity and token type: IMDSv2's
//! `metadata` (getplatformmetadata), `csr` (binding key, first mint only, and the CSR) and
//! `credential` (issuecredential), then the `token` request every flow ends with. A step's time
//! includes its retries. Recorded by the engine's sources, never on a caller's request path;
//! `popgate bench` reads it to split an acquisition. Labels are config names and fixed enums.
//! Registered in the process registry on first use, so it stays out of `Metrics::new`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec};

use crate::identity::token::TokenType;

/// The `step` label values, in the order an IMDSv2 PoP acquisition runs them.
pub const STEPS: [&str; 4] = ["metadata", "csr", "credential", "token"];

/// One step of an acquisition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// IMDSv2 `getplatformmetadata`.
    Metadata,
    /// The binding key (generated on the first mint only) and the CSR.
    Csr,
    /// IMDSv2 `issuecredential`.
    Credential,
    /// The token request (token endpoint, IMDS or App Service).
    Token,
}

impl Step {
    /// The `step` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Metadata => STEPS[0],
            Step::Csr => STEPS[1],
            Step::Credential => STEPS[2],
            Step::Token => STEPS[3],
        }
    }
}

/// Buckets (seconds): a CSR takes microseconds to milliseconds (key generation: up to a second),
/// a local IMDS milliseconds, a remote token endpoint tens to hundreds; 30 s is the transport's
/// request timeout, and a step with retries can take a minute (IMDS's 410 schedule).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn family() -> prometheus::Result<HistogramVec> {
    let v = HistogramVec::new(
        HistogramOpts::new(
            "popgate_token_step_duration_seconds",
            "One step of a token acquisition (metadata, csr, credential: IMDSv2's binding \
             certificate; token: the token request), retries included, by identity, token type \
             and outcome.",
        )
        .buckets(BUCKETS.to_vec()),
        &["identity", "token_type", "step", "outcome"],
    )?;
    super::global().registry().register(Box::new(v.clone()))?;
    Ok(v)
}

/// Registered once; `token_steps_build` below proves the definition valid.
static FAMILY: LazyLock<HistogramVec> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    family().expect("static token step metric definition is valid and registered once")
});

/// `identity` ran `step` of a `token_type` acquisition in `elapsed`, successfully when `ok`.
pub fn observe(identity: &str, token_type: TokenType, step: Step, ok: bool, elapsed: Duration) {
    FAMILY
        .with_label_values(&[
            identity,
            token_type.as_str(),
            step.as_str(),
            if ok { "ok" } else { "error" },
        ])
        .observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_steps_build_and_observe() {
        observe(
            "token-steps-test",
            TokenType::MtlsPop,
            Step::Csr,
            true,
            Duration::from_millis(2),
        );
        let h = FAMILY.with_label_values(&["token-steps-test", "mtls_pop", "csr", "ok"]);
        assert_eq!(h.get_sample_count(), 1);
        assert_eq!(
            STEPS,
            [Step::Metadata, Step::Csr, Step::Credential, Step::Token].map(Step::as_str)
        );
    }
}
