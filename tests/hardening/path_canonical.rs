//! One canonical path (issue 12, point 2): popgate routes on the request's canonical path and
//! forwards exactly that, so no spelling of a path gets a refused caller past a path-prefix route
//! or a `strip_prefix` route out of its upstream's base path. Each form is sent the way a hostile
//! neighbour would, over HTTP/1 (origin and absolute form) and HTTP/2 (`:path`), through the real
//! proxy to a real mTLS upstream that records the path it received.

use crate::kit::dataplane::*;
use crate::kit::guard::*;
use http::{Request, Version};
use popgate::access::{AllowList, AllowRule};
use popgate::dataplane::ProxyHandle;
use popgate::route::policy::RoutePolicy;

/// The host with an `/admin/` route that admits one CIDR beside an open route.
const APP: &str = "app.svc.example";
/// The host with a `strip_prefix` route onto a base path.
const GRAPH: &str = "graph.microsoft.com";

/// How a caller spells the request target.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// HTTP/1.1 `GET /path` with a `Host` header.
    Origin,
    /// HTTP/1.1 `GET http://host/path` (how HTTP_PROXY clients send).
    Absolute,
    /// HTTP/2 (h2c) with `:path`.
    H2,
}

const FORMS: [Form; 3] = [Form::Origin, Form::Absolute, Form::H2];

struct Rig {
    env: Env,
    proxy: ProxyHandle,
}

impl Rig {
    /// popgate with three routes: `admin` (`APP` + `/admin/`, admitting only 10.0.0.0/8, so the
    /// loopback caller is refused), `open` (`APP`, any path) and `fic` (`GRAPH` + `/fic/graph`,
    /// stripped, onto `https://graph.microsoft.com/v1.0`).
    async fn start() -> Self {
        let env = Env::new().await;
        let settings = env.pki.upstream_settings(
            env.dir.path(),
            &[
                (&format!("{APP}:443"), env.upstream.addr),
                (&format!("{GRAPH}:443"), env.upstream.addr),
            ],
        );
        let token = |name: &str| pop_token(env.dir.path(), &env.pki.binding("popgate"), name);
        let only_10 = RoutePolicy {
            allow: Some(AllowList(vec![AllowRule::Cidr(
                "10.0.0.0/8".parse().unwrap(),
            )])),
            max_body_bytes: None,
        };
        let mut fic = route("fic", Some(GRAPH), Some("/fic/graph"));
        fic.strip_prefix = true;
        fic.upstream = Some(format!("https://{GRAPH}/v1.0").parse().unwrap());
        let routes = vec![
            (
                route("admin", Some(APP), Some("/admin/")),
                token("admin"),
                only_10,
            ),
            (
                route("open", Some(APP), None),
                token("open"),
                RoutePolicy::default(),
            ),
            (fic, token("fic"), RoutePolicy::default()),
        ];
        let proxy = start_guarded(routes, &settings, vec![plain_listener()], vec![]).await;
        Rig { env, proxy }
    }

    /// Sends `GET path` for `host` in `form`; the status and the JSON body when popgate answered.
    async fn get(&self, form: Form, host: &str, path: &str) -> (u16, Option<serde_json::Value>) {
        let addr = self.proxy.local_addrs()[0];
        let response = match form {
            Form::Origin => {
                let request = Request::builder()
                    .uri(path)
                    .header("host", host)
                    .body(TestBody::Empty)
                    .unwrap();
                h1_send(addr, request).await
            }
            Form::Absolute => h1_send(addr, absolute_get(host, path)).await,
            Form::H2 => {
                let request = Request::builder()
                    .version(Version::HTTP_2)
                    .uri(format!("http://{host}{path}"))
                    .body(TestBody::Empty)
                    .unwrap();
                h2c_send(addr, request).await
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            text(response).await;
            (status, None)
        } else {
            (status, Some(json(response).await))
        }
    }

    /// The paths the upstream received, in order.
    fn seen_paths(&self) -> Vec<String> {
        self.env
            .upstream
            .seen()
            .into_iter()
            .map(|s| s.path)
            .collect()
    }

    /// `path` on `APP`'s open route, in every form, reaches the upstream as exactly `want`.
    async fn assert_forwarded_as(&self, path: &str, want: &str) {
        for form in FORMS {
            let (status, body) = self.get(form, APP, path).await;
            assert_eq!(status, 200, "{form:?} {path}: {body:?}");
            let seen = self.seen_paths();
            assert_eq!(
                seen.last().map(String::as_str),
                Some(want),
                "{form:?} {path}"
            );
        }
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_refused_caller_never_reaches_admin_by_another_spelling() {
    let rig = Rig::start().await;
    // (path, the refusal: 403 from the admin route's allow list, or 400 for no safe form)
    let attacks = [
        ("/admin/me", "caller_not_allowed"),
        ("/x/../admin/me", "caller_not_allowed"),
        ("/%61dmin/me", "caller_not_allowed"),
        ("/%61%64%6D%69%6E/me", "caller_not_allowed"),
        ("//admin/me", "caller_not_allowed"),
        ("///admin//me", "caller_not_allowed"),
        ("/./admin/me", "caller_not_allowed"),
        ("/x/%2e%2e/admin/me", "caller_not_allowed"),
        ("/x/%2E%2e/admin/me", "caller_not_allowed"),
        ("/x/.%2E/admin/me", "caller_not_allowed"),
        ("/x/y/../../admin/me", "caller_not_allowed"),
        ("/../admin/me", "bad_request"),
        ("/%2e%2e/admin/me", "bad_request"),
        ("/x/../../admin/me", "bad_request"),
        ("/x/..;/admin/me", "bad_request"),
        ("/x\\..\\admin/me", "bad_request"),
        ("/x/%zz/../admin/me", "bad_request"),
    ];
    for form in FORMS {
        for (path, error) in attacks {
            let (status, body) = rig.get(form, APP, path).await;
            let body = body.unwrap_or_else(|| panic!("{form:?} {path}: forwarded ({status})"));
            assert_eq!(body["error"], error, "{form:?} {path}: {status} {body}");
            let want = if error == "bad_request" { 400 } else { 403 };
            assert_eq!(status, want, "{form:?} {path}: {body}");
        }
    }
    assert_eq!(
        rig.seen_paths(),
        Vec::<String>::new(),
        "a refused caller's request reached the upstream"
    );
    rig.stop().await;
}

#[tokio::test]
async fn strip_prefix_never_escapes_the_upstream_base_path() {
    let rig = Rig::start().await;
    // (path, what popgate answers: 200 forwarded, 403 no route left after `..`, 400 refused)
    let cases = [
        ("/fic/graph/me", 200),
        ("/fic/graph/x/../me", 200),
        ("/fic/graph//me", 200),
        ("/fic/graph/%6De", 200),
        ("/fic/graph/../../beta/me", 403),
        ("/fic/graph/%2e%2e/%2E%2E/beta/me", 403),
        ("/fic/graph/../../../beta/me", 400),
        // The prefix ends inside a segment: stripping it would leave `..` first.
        ("/fic/graph../beta/me", 400),
        ("/fic/graph%2e%2e/beta/me", 400),
        ("/fic/graph./me", 400),
    ];
    let mut forwarded = 0;
    for form in FORMS {
        for (path, want) in cases {
            let (status, body) = rig.get(form, GRAPH, path).await;
            assert_eq!(status, want, "{form:?} {path}: {body:?}");
            forwarded += usize::from(status == 200);
        }
    }
    // Everything that reached the upstream is exactly the base path's `/me`.
    assert_eq!(rig.seen_paths(), vec!["/v1.0/me".to_string(); forwarded]);
    rig.stop().await;
}

#[tokio::test]
async fn meaningful_encodings_and_the_query_pass_byte_for_byte() {
    let rig = Rig::start().await;
    let exact = [
        "/v1/me?x=1",
        "/docs/a%2Fb/c%20d/100%25",
        "/docs/%E2%82%AC/%3B/x;y=z",
        "/q?next=/../admin/%2e%2e&x=%2f",
        "/admin%2Fme",
    ];
    for path in exact {
        rig.assert_forwarded_as(path, path).await;
    }
    rig.stop().await;
}

#[tokio::test]
async fn the_upstream_gets_the_canonical_path_that_was_matched() {
    let rig = Rig::start().await;
    let normalised = [
        ("/x/../v1/me?q=/../a", "/v1/me?q=/../a"),
        ("//v1//me", "/v1/me"),
        ("/%7Euser/%41b%2d", "/~user/Ab-"),
        ("/a%2fb/%e2%82%ac", "/a%2Fb/%E2%82%AC"),
        ("/v1/me/.", "/v1/me/"),
    ];
    for (path, want) in normalised {
        rig.assert_forwarded_as(path, want).await;
    }
    rig.stop().await;
}
