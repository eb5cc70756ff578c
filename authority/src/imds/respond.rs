//! What an IMDS handler decides (`Answer`) and the error bodies IMDS, IMDSv2 and App Service send.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{Value, json};

use super::backend::BackendError;

/// A handler's verdict: the status and JSON body to send, plus what to record about it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// Extra response headers (name, value); values are plain ASCII built by this module.
    pub headers: Vec<(&'static str, String)>,
    /// The identity the request resolved to, when it got that far.
    pub client_id: Option<String>,
    /// The `error` code answered, or a short note of what was served.
    pub outcome: String,
}

impl Answer {
    /// A 200 with `body` for `client_id`.
    pub fn ok(body: Value, client_id: String, outcome: &str) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
            client_id: Some(client_id),
            outcome: outcome.to_string(),
        }
    }

    /// Tags the answer with the identity it concerned.
    pub fn for_client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_string());
        self
    }
}

/// Seconds since the Unix epoch (0 if the clock is before 1970, which no test machine is).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn timestamp() -> String {
    // ESTS writes `2022-11-10 23:12:37Z`; httpdate gives the RFC 7231 form, so build it by hand.
    let secs = unix_now();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An IMDS v1 refusal in the shape of `imds-v1-error-400.json` (no AADSTS code: IMDS itself refused).
pub(crate) fn v1_error(status: StatusCode, error: &str, description: &str) -> Answer {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let trace_id = uuid::Uuid::new_v4().to_string();
    Answer {
        status,
        body: json!({
            "error": error,
            "error_description": description,
            "error_codes": [],
            "timestamp": timestamp(),
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        }),
        headers: Vec::new(),
        client_id: None,
        outcome: error.to_string(),
    }
}

/// The directory refused (unknown resource, disabled identity …): ESTS's error relayed by IMDS, as
/// in `imds-v1-error-400.json`, AADSTS code, trace and correlation ids included.
pub(crate) fn backend_error(err: &BackendError) -> Answer {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let trace_id = uuid::Uuid::new_v4().to_string();
    let ts = timestamp();
    let description = format!(
        "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {ts}",
        err.code, err.description
    );
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: json!({
            "error": err.error,
            "error_description": description,
            "error_codes": [err.code],
            "timestamp": ts,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", err.code),
        }),
        headers: Vec::new(),
        client_id: None,
        outcome: err.error.clone(),
    }
}

/// An IMDSv2 refusal: `{error, error_description}` as in
/// `imdsv2-issuecredential-400-attestation-missing.json`.
pub(crate) fn v2_error(status: StatusCode, error: &str, description: &str) -> Answer {
    Answer {
        status,
        body: json!({ "error": error, "error_description": description }),
        headers: Vec::new(),
        client_id: None,
        outcome: error.to_string(),
    }
}

/// An App Service refusal: `{statusCode, message, correlationId}`, as App Service's MSI endpoint
/// answers. `outcome` is the short code recorded in observations.
pub(crate) fn app_service_error(status: StatusCode, outcome: &str, message: &str) -> Answer {
    Answer {
        status,
        body: json!({
            "statusCode": status.as_u16(),
            "message": message,
            "correlationId": uuid::Uuid::new_v4().to_string(),
        }),
        headers: Vec::new(),
        client_id: None,
        outcome: outcome.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2022-11-10 is day 19306.
        assert_eq!(civil_from_days(19_306), (2022, 11, 10));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
