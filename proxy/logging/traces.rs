//! OpenTelemetry trace export: off unless `telemetry.otlp_endpoint` or an
//! `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` variable names a collector. Spans go out in batches over
//! OTLP/HTTP (protobuf); the standard `OTEL_*` variables (service name, resource attributes,
//! sampler, batch sizes, headers, timeout) apply as the OpenTelemetry SDK reads them. The endpoint
//! and the CA an `https://` collector is verified with are resolved here, so that a bad value is
//! reported by name before the first span.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rustls_pki_types::CertificateDer;
use tokio::runtime::Handle;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::Registry;

use super::otlp_client::OtlpClient;
use crate::certs::cert_files;
use crate::config::model::Telemetry;
use crate::config::validate::telemetry::endpoint;

/// The `service.name` when neither the config nor `OTEL_SERVICE_NAME` sets one.
pub const DEFAULT_SERVICE_NAME: &str = "popgate";

/// The OTLP path of traces under the base endpoint (the OTLP/HTTP specification's).
const TRACES_PATH: &str = "/v1/traces";

/// Spans not exported: a caller connection's and a route driver's live for minutes to days, so a
/// trace rooted in one would never end. Request and token-acquisition spans start traces instead.
pub const LONG_LIVED_SPANS: [&str; 2] = ["connection", "route_driver"];

/// The variable naming the traces endpoint in full (used as is; it wins over the base one).
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// The variables naming a PEM file of CA certificates an `https://` collector is verified with,
/// the traces one first (the OTLP exporter specification's).
pub const CERTIFICATE_ENVS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// A setting asks for what popgate cannot do (a gRPC protocol): popgate does not start.
    #[error("OpenTelemetry trace export: {0}")]
    Refused(String),
    /// An `OTEL_*` variable is unusable (not a URL, an unreadable CA file): as the OpenTelemetry
    /// specification asks of bad variables, popgate says so and runs without trace export.
    #[error("{0}")]
    Ignored(String),
}

impl TracesError {
    /// Whether popgate must not start (else it runs without trace export).
    pub fn is_fatal(&self) -> bool {
        matches!(self, TracesError::Refused(_))
    }
}

/// Where spans are posted: the file's base URL, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is,
/// else `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended; `None` when none is set.
fn traces_endpoint(
    settings: &Telemetry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, TracesError> {
    if let Some(base) = &settings.otlp_endpoint {
        return Ok(Some(format!("{base}{TRACES_PATH}")));
    }
    let named = |name: &str| {
        env(name)
            .map(|text| {
                endpoint(text.trim()).map_err(|e| TracesError::Ignored(format!("{name}: {e}")))
            })
            .transpose()
    };
    if let Some(full) = named(TRACES_ENDPOINT_ENV)? {
        return Ok(Some(full));
    }
    Ok(named(opentelemetry_otlp::OTEL_EXPORTER_OTLP_ENDPOINT)?
        .map(|base| format!("{base}{TRACES_PATH}")))
}

/// The CA certificates named by `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE`, if one is set.
fn certificate_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<CertificateDer<'static>>, TracesError> {
    let Some((name, path)) = CERTIFICATE_ENVS
        .iter()
        .find_map(|name| env(name).map(|path| (*name, path)))
    else {
        return Ok(Vec::new());
    };
    cert_files::load_cert_chain(std::path::Path::new(path.trim()))
        .map_err(|e| TracesError::Ignored(format!("{name}: {e}")))
}

/// The running exporter: its spans reach the collector until [`TraceExport::shutdown`].
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

/// Starts trace export if `settings` or the environment (`env`) names a collector; `None` when
/// export is off (the default, and also with `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`). An `https://` collector is verified with the system's roots,
/// `extra_ca` (`network.extra_ca_files`) and the `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE` file.
/// Exports run on `runtime`.
pub fn start(
    settings: &Telemetry,
    extra_ca: &[CertificateDer<'static>],
    env: &dyn Fn(&str) -> Option<String>,
    runtime: Handle,
) -> Result<Option<TraceExport>, TracesError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let Some(endpoint) = traces_endpoint(settings, &env)? else {
        return Ok(None);
    };
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        opentelemetry_otlp::OTEL_EXPORTER_OTLP_PROTOCOL,
    ] {
        if let Some(protocol) = env(name)
            && protocol.trim() != "http/protobuf"
        {
            return Err(TracesError::Refused(format!(
                "{name}={protocol}: popgate exports OTLP over http/protobuf only"
            )));
        }
    }
    let mut roots = extra_ca.to_vec();
    roots.extend(certificate_env(&env)?);
    let client = OtlpClient::new(runtime, &roots).map_err(TracesError::Ignored)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TracesError::Ignored(e.to_string()))?;
    let service_name = settings
        .service_name
        .clone()
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    super::trace_context::enable();
    Ok(Some(TraceExport { provider }))
}

impl TraceExport {
    /// The `tracing` layer turning popgate's spans into OpenTelemetry spans: its spans down to
    /// debug (the request's child spans are debug, so they cost nothing while export is off), and
    /// its events at info and above as span events. Other crates' spans and events stay out, and
    /// so do the spans that last as long as a connection or a route ([`LONG_LIVED_SPANS`]).
    pub(crate) fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
        let tracer = self.provider.tracer("popgate");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(|meta| {
                let max = if meta.is_span() {
                    if LONG_LIVED_SPANS.contains(&meta.name()) {
                        return false;
                    }
                    Level::DEBUG
                } else {
                    Level::INFO
                };
                meta.target().starts_with("popgate") && *meta.level() <= max
            }))
            .boxed()
    }

    /// Exports the spans still queued and stops; blocking (call it off the runtime's threads,
    /// while the runtime still runs: the exports are spawned on it).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry trace export did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            list.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_file_then_the_traces_variable_as_is_then_the_base_one() {
        let none = Telemetry::default();
        let file = Telemetry {
            otlp_endpoint: Some("https://c.example:4318".into()),
            ..Telemetry::default()
        };
        let both = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
        ]);
        let at =
            |s: &Telemetry, env: &dyn Fn(&str) -> Option<String>| traces_endpoint(s, env).unwrap();
        assert_eq!(
            at(&file, &both).as_deref(),
            Some("https://c.example:4318/v1/traces")
        );
        assert_eq!(at(&none, &both).as_deref(), Some("http://t:4318/custom"));
        let base = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/")]);
        assert_eq!(
            at(&none, &base).as_deref(),
            Some("http://base:4318/v1/traces")
        );
        assert_eq!(at(&none, &vars(&[])), None);
        let bad = vars(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://u:pw@t/x")]);
        let e = traces_endpoint(&none, &bad).unwrap_err();
        assert!(!e.is_fatal());
        let e = e.to_string();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: ") && !e.contains("pw"),
            "{e}"
        );
    }
}
