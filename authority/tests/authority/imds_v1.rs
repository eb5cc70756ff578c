//! IMDS v1 token endpoint and the App Service endpoint over real loopback HTTP, plus faults and
//! observation. Every refusal real IMDS makes is made here too.

use std::time::Duration;

use crate::kit::imds::*;
use popgate_authority::faults::{Endpoint, Fault};
use popgate_authority::imds::ImdsSettings;

const V1: &str = "/metadata/identity/oauth2/token";
const META: (&str, &str) = ("Metadata", "true");
const GRAPH: &str = "https%3A%2F%2Fgraph.microsoft.com";

fn v1(extra: &str) -> String {
    format!("{V1}?api-version=2018-02-01&resource={GRAPH}{extra}")
}

#[tokio::test]
async fn v1_sami_token_has_the_vector_shape_and_verifies() {
    let imds = start(ImdsSettings::default()).await;
    let reply = get(&imds, &v1(""), &[META]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    let golden = vector("imds-v1-openapi-example-200.json");
    let mut want = keys_of(&golden);
    want.push("token_type".into());
    want.sort();
    assert_eq!(keys_of(&body), want);
    for (k, v) in body.as_object().unwrap() {
        assert!(v.is_string(), "{k} must be a string, got {v}");
    }
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], SAMI_CLIENT);
    assert_eq!(body["resource"], "https://graph.microsoft.com");
    assert_eq!(body["expires_in"], TOKEN_LIFETIME.to_string());
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on >= 978_307_200, "expires_on must be absolute");
    let claims = imds
        .backend
        .keys
        .verify(
            body["access_token"].as_str().unwrap(),
            "https://graph.microsoft.com",
        )
        .unwrap();
    assert_eq!(claims.appid, SAMI_CLIENT);
    assert_eq!(claims.cnf, None);
    let log = imds.observations.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].endpoint, Endpoint::ImdsV1Token);
    assert_eq!(log[0].status, 200);
    assert_eq!(log[0].client_id.as_deref(), Some(SAMI_CLIENT));
}

#[tokio::test]
async fn v1_uami_by_each_selector() {
    let imds = start(ImdsSettings::default()).await;
    let resource_id =
        percent_encoding::utf8_percent_encode(UAMI_RESOURCE, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    for extra in [
        format!("&client_id={UAMI_CLIENT}"),
        format!("&object_id={UAMI_OBJECT}"),
        format!("&msi_res_id={resource_id}"),
    ] {
        let reply = get(&imds, &v1(&extra), &[META]).await;
        assert_eq!(reply.status, 200, "{extra}: {:?}", reply.body);
        assert_eq!(reply.json()["client_id"], UAMI_CLIENT, "{extra}");
    }
}

/// (query suffix or full path, headers, what the description must mention)
async fn assert_v1_refused(imds: &Imds, path: &str, headers: &[(&str, &str)], mention: &str) {
    let reply = get(imds, path, headers).await;
    assert_eq!(reply.status, 400, "{path}: {:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"], "invalid_request", "{path}");
    for key in [
        "error_description",
        "error_codes",
        "correlation_id",
        "trace_id",
        "timestamp",
    ] {
        assert!(body.get(key).is_some(), "{path}: error body lacks {key}");
    }
    let description = reply.description();
    assert!(
        description.contains(mention),
        "{path}: description {description:?} should mention {mention:?}"
    );
}

#[tokio::test]
async fn v1_refuses_what_real_imds_refuses() {
    let imds = start(ImdsSettings::default()).await;
    assert_v1_refused(&imds, &v1(""), &[], "metadata header").await;
    assert_v1_refused(&imds, &v1(""), &[("Metadata", "false")], "metadata header").await;
    assert_v1_refused(
        &imds,
        &v1(""),
        &[META, ("X-Forwarded-For", "10.0.0.1")],
        "X-Forwarded-For",
    )
    .await;
    assert_v1_refused(
        &imds,
        &format!("{V1}?resource={GRAPH}"),
        &[META],
        "api-version",
    )
    .await;
    assert_v1_refused(
        &imds,
        &format!("{V1}?api-version=2099-01-01&resource={GRAPH}"),
        &[META],
        "2099-01-01",
    )
    .await;
    assert_v1_refused(
        &imds,
        &format!("{V1}?api-version=2018-02-01"),
        &[META],
        "resource",
    )
    .await;
    assert_v1_refused(&imds, &v1("&resource=x"), &[META], "more than once").await;
    assert_v1_refused(&imds, &v1("&client_id="), &[META], "empty").await;
    assert_v1_refused(&imds, &v1("&bogus=1"), &[META], "bogus").await;
    assert_v1_refused(
        &imds,
        &v1(&format!("&mi_res_id={UAMI_RESOURCE}")),
        &[META],
        "msi_res_id",
    )
    .await;
    assert_v1_refused(
        &imds,
        &v1(&format!("&client_id={UAMI_CLIENT}&object_id={UAMI_OBJECT}")),
        &[META],
        "only one",
    )
    .await;
    assert_v1_refused(
        &imds,
        &v1("&client_id=00000000-0000-0000-0000-000000000000"),
        &[META],
        "Identity not found",
    )
    .await;
    // Nothing was minted for any of them.
    assert_eq!(imds.observations.successes(Endpoint::ImdsV1Token), 0);
    assert!(
        imds.observations
            .log()
            .iter()
            .all(|r| r.status == 400 && r.outcome == "invalid_request")
    );
}

#[tokio::test]
async fn v1_without_sami_refuses_a_selectorless_request() {
    let imds = start_with(TestBackend::new(false), ImdsSettings::default()).await;
    assert_v1_refused(&imds, &v1(""), &[META], "no system-assigned identity").await;
    let ok = get(&imds, &v1(&format!("&client_id={UAMI_CLIENT}")), &[META]).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn v1_wrong_method_is_405() {
    let imds = start(ImdsSettings::default()).await;
    let reply = send(&imds, "POST", &v1(""), &[META], Some(""))
        .await
        .unwrap();
    assert_eq!(reply.status, 405);
}

#[tokio::test]
async fn v1_backend_refusal_has_the_error_vector_shape() {
    let imds = start(ImdsSettings::default()).await;
    let reply = get(
        &imds,
        &format!("{V1}?api-version=2018-02-01&resource=https%3A%2F%2Funknown.example"),
        &[META],
    )
    .await;
    assert_eq!(reply.status, 400);
    let body = reply.json();
    assert_eq!(keys_of(&body), keys_of(&vector("imds-v1-error-400.json")));
    assert_eq!(body["error"], "invalid_resource");
    assert_eq!(body["error_codes"][0], 500011);
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with("AADSTS500011:"), "{description}");
    assert!(description.contains(body["correlation_id"].as_str().unwrap()));
}

#[tokio::test]
async fn unknown_path_is_404() {
    let imds = start(ImdsSettings::default()).await;
    let reply = get(&imds, "/metadata/instance?api-version=2021-02-01", &[META]).await;
    assert_eq!(reply.status, 404);
}

// ---- faults --------------------------------------------------------------------------------

#[tokio::test]
async fn injected_statuses_then_recovery() {
    let imds = start(ImdsSettings::default()).await;
    imds.faults.push(
        Endpoint::ImdsV1Token,
        Fault::Status {
            code: 429,
            retry_after: Some(7),
            body: None,
        },
        2,
    );
    imds.faults.push(
        Endpoint::ImdsV1Token,
        Fault::Status {
            code: 410,
            retry_after: None,
            body: Some("Gone".into()),
        },
        1,
    );
    imds.faults.push(
        Endpoint::ImdsV1Token,
        Fault::Status {
            code: 500,
            retry_after: None,
            body: None,
        },
        1,
    );
    for _ in 0..2 {
        let r = get(&imds, &v1(""), &[META]).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.headers["retry-after"], "7");
        assert!(r.headers["server"].to_str().unwrap().contains("IMDS"));
        r.json();
    }
    let gone = get(&imds, &v1(""), &[META]).await;
    assert_eq!(gone.status, 410);
    assert_eq!(&gone.body[..], b"Gone");
    assert_eq!(get(&imds, &v1(""), &[META]).await.status, 500);
    assert_eq!(get(&imds, &v1(""), &[META]).await.status, 200);
    let statuses: Vec<u16> = imds.observations.log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 410, 500, 200]);
}

#[tokio::test]
async fn injected_drop_closes_without_an_answer() {
    let imds = start(ImdsSettings::default()).await;
    imds.faults.push(Endpoint::ImdsV1Token, Fault::Drop, 1);
    let dropped = send(&imds, "GET", &v1(""), &[META], None).await;
    assert!(dropped.is_err(), "expected no answer, got {dropped:?}");
    assert_eq!(get(&imds, &v1(""), &[META]).await.status, 200);
    let log = imds.observations.log();
    assert_eq!((log[0].status, log[0].outcome.as_str()), (0, "dropped"));
}

#[tokio::test]
async fn injected_delay_and_latency_still_answer() {
    let imds = start(ImdsSettings::default()).await;
    imds.faults
        .push(Endpoint::ImdsV1Token, Fault::Delay { millis: 20 }, 1);
    imds.faults
        .set_latency(Endpoint::ImdsV1Token, Duration::from_millis(5));
    assert_eq!(get(&imds, &v1(""), &[META]).await.status, 200);
    assert_eq!(imds.observations.successes(Endpoint::ImdsV1Token), 1);
}

#[tokio::test]
async fn dropping_the_handle_stops_serving() {
    let imds = start(ImdsSettings::default()).await;
    let addr = imds.handle.addr();
    assert_eq!(imds.handle.base_url(), format!("http://{addr}"));
    drop(imds.handle);
    // The listener is closed once the accept task sees the signal; connecting must then fail or
    // the connection must be closed unanswered. Bounded: 200 attempts, each yielding to the runtime.
    let mut stopped = false;
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => {
                stopped = true;
                break;
            }
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    assert!(
        stopped,
        "the IMDS listener still accepts after its handle was dropped"
    );
}

// ---- App Service ----------------------------------------------------------------------------

const APP: &str = "/msi/token";
const SECRET: &str = "s3cr3t-identity-header";

fn app(extra: &str) -> String {
    format!("{APP}?api-version=2019-08-01&resource={GRAPH}{extra}")
}

async fn app_service() -> Imds {
    start(ImdsSettings {
        app_service_identity_header: Some(SECRET.into()),
        ..ImdsSettings::default()
    })
    .await
}

#[tokio::test]
async fn app_service_token_shape_and_selectors() {
    let imds = app_service().await;
    let reply = get(&imds, &app(""), &[("X-IDENTITY-HEADER", SECRET)]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(
        keys_of(&body),
        [
            "access_token",
            "client_id",
            "expires_on",
            "resource",
            "token_type"
        ]
    );
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires_on > unix_now());
    assert_eq!(body["client_id"], SAMI_CLIENT);
    let uami = get(
        &imds,
        &app(&format!("&mi_res_id={UAMI_RESOURCE}")),
        &[("X-IDENTITY-HEADER", SECRET)],
    )
    .await;
    assert_eq!(uami.json()["client_id"], UAMI_CLIENT);
    assert!(uami.headers.get("server").is_none());
    assert_eq!(imds.observations.successes(Endpoint::AppService), 2);
}

#[tokio::test]
async fn app_service_refusals() {
    let imds = app_service().await;
    let missing = get(&imds, &app(""), &[]).await;
    assert_eq!(missing.status, 400);
    assert!(missing.description().contains("X-IDENTITY-HEADER"));
    let wrong = get(&imds, &app(""), &[("X-IDENTITY-HEADER", "guess")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["correlationId"].is_string());
    let hdr = [("X-IDENTITY-HEADER", SECRET)];
    for (path, mention) in [
        (format!("{APP}?resource={GRAPH}"), "api-version"),
        (
            format!("{APP}?api-version=2018-02-01&resource={GRAPH}"),
            "2018-02-01",
        ),
        (format!("{APP}?api-version=2019-08-01"), "resource"),
        (app("&msi_res_id=x"), "msi_res_id"),
        (app("&client_id=nope"), "Identity not found"),
    ] {
        let r = get(&imds, &path, &hdr).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(
            r.description().contains(mention),
            "{path}: {:?} should mention {mention}",
            r.description()
        );
    }
}

#[tokio::test]
async fn app_service_is_off_without_a_secret() {
    let imds = start(ImdsSettings::default()).await;
    let reply = get(&imds, &app(""), &[("X-IDENTITY-HEADER", SECRET)]).await;
    assert_eq!(reply.status, 404);
}

#[test]
fn settings_debug_hides_the_identity_secret() {
    let settings = ImdsSettings {
        app_service_identity_header: Some(SECRET.into()),
        ..ImdsSettings::default()
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert_eq!(settings.cert_lifetime, Duration::from_secs(7 * 24 * 3600));
    assert!(settings.v2_enabled);
    assert_eq!(settings.v2_uami_resource_id_key, "mi_res_id");
    assert_eq!(settings.server_header, "IMDS/150.870.65.1854");
}

#[tokio::test]
async fn app_service_wrong_method_is_405() {
    let imds = app_service().await;
    let reply = send(
        &imds,
        "POST",
        &app(""),
        &[("X-IDENTITY-HEADER", SECRET)],
        Some(""),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["statusCode"], 405);
}

#[tokio::test]
async fn an_invalid_injected_status_is_reported_not_panicked() {
    let imds = start(ImdsSettings::default()).await;
    imds.faults.push(
        Endpoint::ImdsV1Token,
        Fault::Status {
            code: 1000,
            retry_after: None,
            body: None,
        },
        1,
    );
    let reply = get(&imds, &v1(""), &[META]).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"], "bad_fault");
    assert!(reply.description().contains("1000"));
}
