//! The `telemetry:` section: the OTLP endpoint must be an `http://` or `https://` base URL.

use super::Ctx;
use crate::config::model::Telemetry;
use crate::config::schema::{RawTelemetry, S};

/// The longest `service_name` accepted: a resource attribute, not a document.
const MAX_SERVICE_NAME: usize = 255;

/// Validates the section; absent means no settings from the file.
pub(super) fn telemetry(cx: &mut Ctx<'_>, raw: Option<&S<RawTelemetry>>) -> Telemetry {
    let Some(raw) = raw else {
        return Telemetry::default();
    };
    let otlp_endpoint = raw.value.otlp_endpoint.as_ref().and_then(|e| {
        endpoint(&e.value)
            .map_err(|msg| cx.error(e.referenced, format!("telemetry.otlp_endpoint: {msg}")))
            .ok()
    });
    let service_name = raw.value.service_name.as_ref().and_then(|n| {
        let name = n.value.trim();
        if name.is_empty() || name.len() > MAX_SERVICE_NAME || name.chars().any(char::is_control) {
            cx.error(
                n.referenced,
                format!(
                    "telemetry.service_name: must be 1 to {MAX_SERVICE_NAME} characters without control characters"
                ),
            );
            return None;
        }
        Some(name.to_owned())
    });
    Telemetry {
        otlp_endpoint,
        service_name,
    }
}

/// An OTLP/HTTP base URL: `http://` or `https://`, a host, no query; a trailing `/` is dropped.
pub(crate) fn endpoint(text: &str) -> Result<String, String> {
    // Checked first, and the text not echoed: it would carry a password into the error.
    if text.contains('@') {
        return Err("may not carry credentials (use OTEL_EXPORTER_OTLP_HEADERS)".into());
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL (e.g. http://127.0.0.1:4318)"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{text}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}` may not have a query"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_are_http_base_urls() {
        assert_eq!(
            endpoint("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318"
        );
        assert_eq!(
            endpoint("https://otel.corp:4318/otlp").unwrap(),
            "https://otel.corp:4318/otlp"
        );
        for bad in ["127.0.0.1:4318", "ftp://x", "http://", "http://h/?a=b"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        let e = endpoint("http://u:s3cret@h").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
