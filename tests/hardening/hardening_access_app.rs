//! The whole path from routes.yaml: `popgate run`'s `App` binds the `unix:` listener with its
//! mode and carries each route's `allow` rules into the data plane.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::kit::config::Fixture;
use crate::kit::dataplane::TestBody;
use crate::kit::guard::h1_send_unix;
use http::Request;

#[tokio::test]
async fn app_serves_the_unix_listener_with_each_routes_allow_rules() {
    let f = Fixture::new();
    let uid = std::fs::metadata(f.dir.path()).unwrap().uid();
    let other = uid.wrapping_add(1);
    let yaml = format!(
        "version: 1
listeners: [{{unix: popgate.sock, mode: \"0600\"}}]
identities:
  byo: {{kind: static, token_file: token.jwt, certificate: {{cert_file: app.pem, key_file: app.key}}}}
routes:
  - {{name: mine, match: {{host: mine.example}}, upstream: \"https://127.0.0.1:9\", resource: https://x.example, flow: vanilla, identity: byo, token_type: bearer, allow: [{{uid: {uid}}}]}}
  - {{name: theirs, match: {{host: theirs.example}}, upstream: \"https://127.0.0.1:9\", resource: https://x.example, flow: vanilla, identity: byo, token_type: bearer, allow: [{{uid: {other}}}]}}
"
    );
    let config = f.load(&yaml).unwrap();
    let socket = f.path("popgate.sock");
    let app = popgate::app::App::start(config).await.unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let get = |host: &str| {
        Request::builder()
            .uri("/")
            .header("host", host)
            .body(TestBody::Empty)
            .unwrap()
    };
    let resp = h1_send_unix(&socket, get("theirs.example")).await;
    assert_eq!(resp.status(), 403);
    let body = crate::kit::dataplane::json(resp).await;
    assert_eq!(body["error"], "caller_not_allowed");
    assert_eq!(body["route"], "theirs");
    // Admitted: the request goes on to the (closed) upstream port and fails there, not at the gate.
    let resp = h1_send_unix(&socket, get("mine.example")).await;
    assert_ne!(resp.status(), 403);
    app.shutdown().await;
    assert!(!socket.exists());
}
