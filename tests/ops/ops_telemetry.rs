//! Logs and traces of the real binary: flat JSON log lines and access-log events, `x-request-id`
//! kept or made and sent both ways, `PUT /log-level` changing what is logged, and OTLP spans of a
//! request (continuing the caller's trace) and of a token acquisition, received by a small OTLP/HTTP
//! server on loopback, with no token or assertion in any attribute.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::kit::admin::*;
use crate::kit::credentials::Env;
use crate::kit::http::{Answer, dial, send_on};
use crate::kit::process::{Child, fields};

/// Bound on the binary starting to serve, on a log line arriving, and on its exit.
const PROCESS_BOUND: Duration = Duration::from_secs(90);

/// The running binary (JSON log, access log on), stdout and stderr captured.
pub(crate) struct Popgate {
    child: Child,
    lines: Vec<String>,
}

impl Popgate {
    pub(crate) fn start(config: &std::path::Path, level: &str, env: &[(&str, &str)]) -> Popgate {
        let mut command = Command::new(env!("CARGO_BIN_EXE_popgate"));
        command
            .args([
                "run",
                "--log-format",
                "json",
                "--access-log",
                "--log-level",
                level,
            ])
            .arg("--config")
            .arg(config);
        for name in [
            "RUST_LOG",
            "POPGATE_LOG",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_SDK_DISABLED",
            "OTEL_TRACES_EXPORTER",
            "OTEL_TRACES_SAMPLER",
            "OTEL_SERVICE_NAME",
        ] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        Popgate {
            child: Child::spawn(command, true),
            lines: Vec::new(),
        }
    }

    /// The next stdout line parsed as a JSON object whose event satisfies `want`. Blocking.
    pub(crate) fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PROCESS_BOUND;
        loop {
            let line = self.child.next_line(deadline).unwrap_or_else(|| {
                panic!(
                    "popgate never logged {what}; output:\n{}",
                    self.child.output().join("\n")
                )
            });
            self.lines.push(line.clone());
            if let Some(event) = fields(&line).filter(|e| want(e)) {
                return event;
            }
        }
    }

    /// Waits for `serving`; returns the proxy and admin addresses. Blocking.
    pub(crate) fn wait_serving(&mut self) -> (SocketAddr, SocketAddr) {
        let listening = self.wait_for("listening", |e| e["message"] == "listening");
        let serving = self.wait_for("serving", |e| e["message"] == "serving");
        (
            listening["addr"].as_str().unwrap().parse().unwrap(),
            serving["admin"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// SIGTERM, the exit (status 0), and everything it wrote.
    pub(crate) fn terminate(mut self) -> Vec<String> {
        self.child.signal("TERM");
        let status = self.child.wait_exit(PROCESS_BOUND);
        assert!(status.success(), "popgate exited with {status}");
        self.child.finish()
    }
}

/// One route (`/app-pop/`, certificate app, mTLS PoP to the authority's resource), admin on
/// 127.0.0.2, and `top` (YAML lines) at the top level.
pub(crate) fn one_route_config(env: &Env, top: &str) -> std::path::PathBuf {
    let flows: Vec<_> = all_flows()
        .into_iter()
        .filter(|f| f.0 == "app-pop")
        .collect();
    env.write_routes_yaml(
        &format!("admin:\n  address: 127.0.0.2:0\n{top}"),
        &crate::kit::authority::resolve_yaml(&env.authority, &[], &[]),
        &env.identities(),
        &routes_yaml(&flows, &[]),
    )
}

/// `GET /app-pop/v1.0/me` through popgate with extra request headers; the answer and the
/// headers the upstream saw (the resource's echo).
pub(crate) async fn get_with(proxy: SocketAddr, headers: &[(&str, &str)]) -> (Answer, Value) {
    let mut request = http::Request::builder()
        .uri("http://legacy.app/app-pop/v1.0/me")
        .header("host", "legacy.app");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let answer = tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut sender = dial(proxy).await?;
        send_on(&mut sender, request).await
    })
    .await
    .expect("request bounded")
    .expect("request answered");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echoed = answer.json()["headers"].clone();
    (answer, echoed)
}

/// `method /log-level` on the admin listener with `body`: status and body.
async fn log_level(admin: SocketAddr, method: &str, body: &[u8]) -> (u16, String) {
    assert!(admin.ip().is_loopback());
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        let head = format!(
            "{method} /log-level HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .expect("admin answered in time");
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_flat_and_the_access_log_names_caller_host_and_request_id() {
    let env = start_env().await;
    let config = one_route_config(&env, "");
    let mut popgate = Popgate::start(&config, "info", &[]);
    let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());

    // The caller's well-formed id is kept: sent upstream and returned.
    let (answer, upstream) = get_with(proxy, &[("x-request-id", "caller-42:abc")]).await;
    assert_eq!(answer.header("x-request-id"), Some("caller-42:abc"));
    assert_eq!(upstream["x-request-id"], "caller-42:abc", "{upstream}");
    // None, or a malformed one: a new id, the same both ways.
    for sent in [None, Some("has space"), Some(&*"x".repeat(129))] {
        let headers: Vec<_> = sent.map(|v| ("x-request-id", v)).into_iter().collect();
        let (answer, upstream) = get_with(proxy, &headers).await;
        let id = answer.header("x-request-id").expect("an id is returned");
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(upstream["x-request-id"], id, "{upstream}");
    }

    let access = tokio::task::block_in_place(|| {
        popgate.wait_for("the first access event", |e| {
            e["target"] == "popgate::access"
        })
    });
    let serving = popgate
        .lines
        .iter()
        .filter_map(|l| fields(l))
        .find(|e| e["message"] == "serving")
        .unwrap();
    for event in [&access, &serving] {
        assert!(event.get("fields").is_none(), "nested fields: {event}");
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event.get(key).is_some(), "no {key}: {event}");
        }
    }
    assert!(serving["admin"].is_string(), "{serving}");
    assert_eq!(access["message"], "request");
    assert_eq!(access["route"], "app-pop");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["host"], "legacy.app");
    assert_eq!(access["request_id"], "caller-42:abc");
    assert_eq!(access["status"], 200);
    assert_eq!(access["upstream_status"], 200);
    let caller: SocketAddr = access["caller"].as_str().unwrap().parse().unwrap();
    assert!(caller.ip().is_loopback(), "{access}");
    for ms in ["duration_ms", "head_ms", "token_wait_ms", "upstream_ms"] {
        assert!(
            access[ms].as_f64().is_some_and(|v| v >= 0.0),
            "{ms}: {access}"
        );
    }
    assert_eq!(access["outcome"], "complete", "{access}");
    assert_eq!(access["bytes_received"], 0, "{access}");
    assert!(
        access["bytes_sent"].as_u64().is_some_and(|n| n > 0),
        "{access}"
    );
    // The request's span fields travel with it (not nested under `fields` either).
    assert_eq!(access["span"]["request_id"], "caller-42:abc", "{access}");
    popgate.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_log_level_changes_what_is_logged_and_refuses_bad_filters() {
    let env = start_env().await;
    let config = one_route_config(&env, "");
    let mut popgate = Popgate::start(&config, "info", &[]);
    let (proxy, admin) = tokio::task::block_in_place(|| popgate.wait_serving());
    assert_eq!(log_level(admin, "GET", b"").await, (200, "info\n".into()));

    // At info, the debug event `forwarded` is not logged: the request's access event comes alone.
    let is_forwarded = |e: &Value| e["message"] == "forwarded";
    let seen_until_access = |popgate: &mut Popgate, id: &str| {
        let start = popgate.lines.len();
        popgate.wait_for("the access event", |e| {
            e["request_id"] == id && e["target"] == "popgate::access"
        });
        popgate.lines[start..]
            .iter()
            .filter_map(|l| fields(l))
            .any(|e| is_forwarded(&e))
    };
    get_with(proxy, &[("x-request-id", "at-info")]).await;
    assert!(!tokio::task::block_in_place(|| seen_until_access(
        &mut popgate,
        "at-info"
    )));

    assert_eq!(
        log_level(admin, "PUT", b"debug\n").await,
        (200, "debug\n".into())
    );
    assert_eq!(log_level(admin, "GET", b"").await, (200, "debug\n".into()));
    get_with(proxy, &[("x-request-id", "at-debug")]).await;
    assert!(tokio::task::block_in_place(|| seen_until_access(
        &mut popgate,
        "at-debug"
    )));

    // Bad bodies change nothing.
    for (body, status) in [
        (&b"popgate=notalevel"[..], 400),
        (b"", 400),
        (b"   ", 400),
        (b"\xff\xfe", 400),
        (&[b'a'; 4096][..], 413),
    ] {
        let (got, text) = log_level(admin, "PUT", body).await;
        assert_eq!(got, status, "{:?}: {text}", String::from_utf8_lossy(body));
    }
    let (status, _) = log_level(admin, "POST", b"debug").await;
    assert_eq!(status, 405);
    assert_eq!(log_level(admin, "GET", b"").await, (200, "debug\n".into()));

    assert_eq!(
        log_level(admin, "PUT", b"warn,popgate::access=info")
            .await
            .0,
        200
    );
    get_with(proxy, &[("x-request-id", "at-warn")]).await;
    assert!(!tokio::task::block_in_place(|| seen_until_access(
        &mut popgate,
        "at-warn"
    )));
    let output = popgate.terminate();
    assert!(
        output.iter().any(|l| l.contains("log filter changed")),
        "the change itself is logged"
    );
}

/// A minimal OTLP/HTTP receiver on loopback, plain or TLS: every `POST` whose body decodes as an
/// `ExportTraceServiceRequest` (protobuf) is kept with its path.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        Self::start_with(None).await
    }

    /// A receiver that serves TLS with `tls` when given.
    pub(crate) async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = Arc::clone(&kept);
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let post = req.method() == http::Method::POST;
                        let path = req.uri().path().to_string();
                        let protobuf = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v == "application/x-protobuf");
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(decoded) if post && protobuf => {
                                kept.lock().unwrap().push((path, decoded));
                                200
                            }
                            _ => 400,
                        };
                        let mut answer = http::Response::new(Full::new(Bytes::new()));
                        *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        answer.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, hyper::Error>(answer)
                    }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            requests,
            task,
        }
    }

    /// The path of every export received.
    pub(crate) fn paths(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|(path, _)| path.clone()).collect()
    }

    /// Every span received, with its resource's attributes.
    pub(crate) fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let mut out = Vec::new();
        for (_, request) in self.requests.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .clone()
                    .unwrap_or_default()
                    .attributes;
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_continue_the_callers_trace_and_carry_no_secret() {
    let receiver = Receiver::start().await;
    let env = start_env().await;
    env.authority.record_issued_tokens();
    let config = one_route_config(
        &env,
        &format!(
            "telemetry:\n  otlp_endpoint: http://{}/\n  service_name: popgate-test\n",
            receiver.addr
        ),
    );
    let mut popgate = Popgate::start(&config, "info", &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let (_, upstream) = get_with(
        proxy,
        &[("traceparent", &traceparent), ("tracestate", "caller=1")],
    )
    .await;
    let sent = upstream["traceparent"]
        .as_str()
        .expect("upstream sees a traceparent")
        .to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        parts[1], trace_id,
        "the caller's trace goes on upstream: {sent}"
    );
    assert_ne!(
        parts[2], caller_span,
        "popgate's own span is the upstream's parent: {sent}"
    );
    assert_eq!(parts[3], "01");
    // A request without trace context starts a trace of its own.
    let (_, fresh) = get_with(proxy, &[]).await;
    let fresh = fresh["traceparent"]
        .as_str()
        .expect("a new trace is sent upstream")
        .to_string();
    assert!(!fresh.contains(trace_id), "{fresh}");
    // SIGTERM flushes the spans still queued.
    let output = tokio::task::block_in_place(|| popgate.terminate());

    let spans = receiver.spans();
    assert!(
        receiver.paths().iter().all(|p| p == "/v1/traces"),
        "{:?}",
        receiver.paths()
    );
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    let in_trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let named = |name: &str| {
        in_trace
            .iter()
            .find(|s| s.name == name)
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span in the caller's trace; spans: {names:?}; popgate's output:\n{}",
                    output.join("\n")
                )
            })
    };
    let request = named("request");
    assert_eq!(hex(&request.parent_span_id), caller_span);
    assert_eq!(attribute(request, "route").as_deref(), Some("app-pop"));
    let status = attribute(request, "http.response.status_code").unwrap_or_default();
    assert!(matches!(&*status, "200" | "IntValue(200)"), "{status}");
    assert!(attribute(request, "request_id").is_some_and(|id| id.len() == 36));
    let token_wait = named("token_wait");
    assert_eq!(token_wait.parent_span_id, request.span_id);
    let exchange = named("upstream");
    assert_eq!(exchange.parent_span_id, request.span_id);
    assert_eq!(
        hex(&exchange.span_id),
        parts[2],
        "traceparent names the upstream span"
    );
    let connect = named("upstream_connect");
    assert_eq!(connect.parent_span_id, exchange.span_id);
    assert_eq!(named("tls_handshake").parent_span_id, connect.span_id);
    assert!(in_trace.iter().all(|s| s.name != "connection"), "{names:?}");

    let acquisition = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "token_acquisition")
        .unwrap_or_else(|| panic!("no token_acquisition span; spans: {names:?}"));
    assert!(acquisition.parent_span_id.is_empty(), "a trace of its own");
    assert_eq!(attribute(acquisition, "route").as_deref(), Some("app-pop"));
    assert_eq!(attribute(acquisition, "identity").as_deref(), Some("app"));
    let (resource, _) = &spans[0];
    assert!(
        resource
            .iter()
            .any(|kv| kv.key == "service.name" && text(&kv.value) == "popgate-test"),
        "{resource:?}"
    );

    // No issued token, client assertion or key in any attribute, event or resource value.
    let mut values = String::new();
    for (resource, span) in &spans {
        let events = span.events.iter().flat_map(|e| e.attributes.iter());
        for kv in resource.iter().chain(&span.attributes).chain(events) {
            values.push_str(&kv.key);
            values.push('=');
            values.push_str(&text(&kv.value));
            values.push('\n');
        }
        values.push_str(&span.name);
        values.push('\n');
    }
    let signatures = env.authority.issued_token_signatures();
    assert!(!signatures.is_empty(), "tokens were recorded");
    for signature in &signatures {
        assert!(
            !values.contains(signature.as_str()),
            "a token or assertion in an attribute"
        );
    }
    for needle in [
        "authorization",
        "mtls_pop ",
        "Bearer ",
        "PRIVATE KEY",
        "client_assertion=",
    ] {
        assert!(
            !values.contains(needle),
            "{needle} in an attribute:\n{values}"
        );
    }
    assert!(
        output
            .iter()
            .any(|l| l.contains("exporting OpenTelemetry traces")),
        "the export is announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_trace_context_passes_through_untouched() {
    let env = start_env().await;
    let config = one_route_config(&env, "");
    let mut popgate = Popgate::start(&config, "info", &[]);
    let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, upstream) = get_with(proxy, &[("traceparent", traceparent)]).await;
    assert_eq!(upstream["traceparent"], traceparent);
    let (_, upstream) = get_with(proxy, &[]).await;
    assert!(upstream.get("traceparent").is_none(), "{upstream}");
    let output = tokio::task::block_in_place(|| popgate.terminate());
    assert!(
        !output
            .iter()
            .any(|l| l.contains("exporting OpenTelemetry traces"))
    );
}

#[test]
fn a_grpc_protocol_or_a_bad_endpoint_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    let yaml = "version: 1\nlisteners:\n  - address: 127.0.0.1:0\nidentities:\n  s: { kind: managed_identity }\nroutes:\n  - { name: r, match: { host: a.example }, resource: https://a.example, identity: s, flow: vanilla }\n";
    let popgate = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_popgate"));
        c.args(args)
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied());
        let out = crate::kit::process::output_within(c, PROCESS_BOUND);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(
        &config,
        format!("{yaml}telemetry:\n  otlp_endpoint: ftp://127.0.0.1:4318\n"),
    )
    .unwrap();
    let (code, stderr) = popgate(&["check"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("routes.yaml:9:") && stderr.contains("telemetry.otlp_endpoint"),
        "{stderr}"
    );

    std::fs::write(&config, yaml).unwrap();
    let (code, stderr) = popgate(
        &["run"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "{stderr}"
    );
}
