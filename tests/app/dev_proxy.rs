//! `popgate dev` (and `bench`) point the config at the local authority on loopback under the real
//! host names: an outbound proxy from `HTTPS_PROXY` must not carry those names to a real proxy
//! (which would reach the real Entra ID). Here the proxy is a closed loopback port: with it in
//! force the route could not get a token.

use std::net::SocketAddr;

use crate::kit::bench::shipped_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_ignores_the_environment_proxy() {
    let env = |name: &str| (name == "HTTPS_PROXY").then(|| "http://127.0.0.1:9".to_string());
    let mut config =
        popgate::config::load_with_env(&shipped_config(), &env).expect("shipped config loads");
    assert!(
        config.network.proxy.is_some(),
        "the environment's proxy is read"
    );
    config.routes.retain(|r| r.name == "graph");
    let local = popgate::dev::local_authority::start(&config).await.unwrap();
    popgate::dev::rewrite::point_at_authority(
        &mut config,
        &local,
        Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .unwrap();
    assert!(config.network.proxy.is_none());
    let app = popgate::app::App::start(config).await.unwrap();
    app.initial_round(popgate::dev::READY_WAIT).await;
    let slot = app.route("graph").expect("graph route");
    assert!(slot.status().is_serving(), "{:?}", slot.status().label());
    app.shutdown().await;
}
