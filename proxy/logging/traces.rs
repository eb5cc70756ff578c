//! OpenTelemetry trace export: off unless `telemetry.otlp_endpoint` or an
//! `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` variable names a collector. Spans go out in batches over
//! OTLP/HTTP (protobuf); the standard `OTEL_*` variables (service name, resource attributes,
//! sampler, batch sizes, headers, timeout) apply as the OpenTelemetry SDK reads them.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::Registry;

use super::otlp_client::OtlpClient;
use crate::config::model::Telemetry;

/// The `service.name` when neither the config nor `OTEL_SERVICE_NAME` sets one.
pub const DEFAULT_SERVICE_NAME: &str = "popgate";

/// The OTLP path of traces under the base endpoint (the OTLP/HTTP specification's).
const TRACES_PATH: &str = "/v1/traces";

/// Spans not exported: a caller connection's and a route driver's live for minutes to days, so a
/// trace rooted in one would never end. Request and token-acquisition spans start traces instead.
pub const LONG_LIVED_SPANS: [&str; 2] = ["connection", "route_driver"];

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry trace export: {0}")]
pub struct TracesError(String);

/// The running exporter: its spans reach the collector until [`TraceExport::shutdown`].
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

/// Starts trace export if `settings` or the environment (`env`) names a collector; `None` when
/// export is off (the default, and also with `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`). Exports run on `runtime`.
pub fn start(
    settings: &Telemetry,
    env: &dyn Fn(&str) -> Option<String>,
    runtime: Handle,
) -> Result<Option<TraceExport>, TracesError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env(opentelemetry_otlp::OTEL_EXPORTER_OTLP_ENDPOINT));
    if settings.otlp_endpoint.is_none() && from_env.is_none() {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        opentelemetry_otlp::OTEL_EXPORTER_OTLP_PROTOCOL,
    ] {
        if let Some(protocol) = env(name)
            && protocol.trim() != "http/protobuf"
        {
            return Err(TracesError(format!(
                "{name}={protocol}: popgate exports OTLP over http/protobuf only"
            )));
        }
    }
    let client = OtlpClient::new(runtime).map_err(TracesError)?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary);
    // The file's endpoint wins over the variables; from them, the exporter resolves it itself.
    if let Some(base) = &settings.otlp_endpoint {
        builder = builder.with_endpoint(format!("{base}{TRACES_PATH}"));
    }
    let exporter = builder.build().map_err(|e| TracesError(e.to_string()))?;
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
