//! W3C trace context (`traceparent`, `tracestate`) between the caller, popgate's spans and the
//! upstream. Only while trace export is on: otherwise the caller's headers pass through untouched,
//! as they always did.

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The W3C trace-context header names.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Turns propagation on (when the trace exporter is installed).
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are exported (and so trace context is continued and replaced).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Makes `span` a child of the caller's span named in `headers` (a missing or malformed
/// `traceparent` starts a new trace).
pub fn continue_from(span: &tracing::Span, headers: &HeaderMap) {
    if !enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when no OpenTelemetry layer is installed, and then there is nothing to continue.
    let _ = span.set_parent(parent);
}

/// Replaces any caller `traceparent`/`tracestate` in `headers` with `span`'s own, so the upstream
/// sees popgate's span as its parent.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    for name in TRACE_HEADERS {
        headers.remove(name);
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}
