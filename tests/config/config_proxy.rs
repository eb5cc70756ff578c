//! `network.proxy`: the long and short forms, the curl-compatible environment default
//! (`https_proxy` / `HTTPS_PROXY`, `no_proxy` / `NO_PROXY`), `none`, and every error at its
//! `FILE:LINE:COL`, none of them showing the credentials.

use popgate::config::outbound_proxy::Bypass;

use crate::kit::config::Fixture;

/// `version: 1`, then `top` from line 2, then identities and one route.
fn with_top(top: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: 127.0.0.1:3128}}]
{top}identities:
  sami: {{kind: managed_identity}}
routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: vanilla, identity: sami}}
"
    )
}

fn no_secret(errors: &[String]) {
    for e in errors {
        assert!(!e.contains("s3cret"), "{e}");
    }
}

#[test]
fn long_form_with_no_proxy_and_credentials_from_a_named_variable() {
    let f = Fixture::new().with_env("CORP_PROXY_AUTH", "alice:s3cret");
    let cfg = f
        .load(&with_top(
            "network:
  proxy:
    url: http://proxy.corp:3128
    no_proxy: [.corp.example, 10.0.0.0/8, '::1']
    credentials_env: CORP_PROXY_AUTH
",
        ))
        .unwrap();
    let proxy = cfg.network.proxy.as_ref().expect("a proxy");
    assert_eq!(proxy.to_string(), "http://***@proxy.corp:3128");
    assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 3128));
    assert!(proxy.authorization().is_some());
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert_eq!(proxy.bypass("graph.microsoft.com"), None);
    assert_eq!(
        proxy.bypass("db.corp.example"),
        Some(Bypass::NoProxy("corp.example".into()))
    );
    assert_eq!(
        proxy.bypass("10.1.2.3"),
        Some(Bypass::NoProxy("10.0.0.0/8".into()))
    );
    assert_eq!(proxy.bypass("169.254.169.254"), Some(Bypass::Local));
}

#[test]
fn short_form_takes_no_proxy_from_the_environment() {
    let f = Fixture::new().with_env("NO_PROXY", "vault.azure.net");
    let cfg = f
        .load(&with_top(
            "network:\n  proxy: http://u:s3cret@proxy.corp:8080/\n",
        ))
        .unwrap();
    let proxy = cfg.network.proxy.unwrap();
    assert_eq!(proxy.to_string(), "http://***@proxy.corp:8080");
    assert_eq!(proxy.origin, "network.proxy");
    assert!(proxy.bypass("kv.vault.azure.net").is_some());
}

#[test]
fn absent_key_reads_the_environment_as_curl_does() {
    // Lowercase first, as curl reads it.
    let f = Fixture::new()
        .with_env("https_proxy", "proxy.low:3128")
        .with_env("HTTPS_PROXY", "http://proxy.up:3128")
        .with_env("no_proxy", "*");
    let cfg = f.load(&with_top("")).unwrap();
    let proxy = cfg.network.proxy.unwrap();
    assert_eq!(proxy.to_string(), "http://proxy.low:3128");
    assert_eq!(proxy.origin, "environment variable https_proxy");
    assert!(
        proxy.bypass("graph.microsoft.com").is_some(),
        "`*` bypasses all"
    );

    let f = Fixture::new().with_env("HTTPS_PROXY", "http://proxy.up");
    let proxy = f.load(&with_top("")).unwrap().network.proxy.unwrap();
    assert_eq!(
        proxy.to_string(),
        "http://proxy.up:1080",
        "curl's default port"
    );

    // No variable (or an empty one): no proxy. HTTP_PROXY is for plain http and not read.
    let f = Fixture::new()
        .with_env("HTTPS_PROXY", "")
        .with_env("HTTP_PROXY", "http://p:1");
    assert!(f.load(&with_top("")).unwrap().network.proxy.is_none());
}

#[test]
fn none_turns_the_environment_proxy_off() {
    let f = Fixture::new().with_env("HTTPS_PROXY", "http://proxy.corp:3128");
    let cfg = f.load(&with_top("network:\n  proxy: none\n")).unwrap();
    assert!(cfg.network.proxy.is_none());
    let cfg = f
        .load(&with_top("network:\n  proxy: {url: none}\n"))
        .unwrap();
    assert!(cfg.network.proxy.is_none());
    // The long form without `url` keeps the environment's proxy, with its own no_proxy.
    let cfg = f
        .load(&with_top("network:\n  proxy: {no_proxy: [a.example]}\n"))
        .unwrap();
    let proxy = cfg.network.proxy.unwrap();
    assert_eq!(proxy.to_string(), "http://proxy.corp:3128");
    assert!(proxy.bypass("a.example").is_some());
}

#[test]
fn bad_urls_are_errors_at_their_value_without_credentials() {
    let f = Fixture::new();
    let errors = f.errors(&with_top("network:\n  proxy: https://u:s3cret@p:3128\n"));
    no_secret(&errors);
    assert_eq!(
        errors,
        vec![f.at(
            4,
            10,
            "network.proxy: proxy `https://***@p:3128`: https:// proxies (TLS to the proxy) are not supported; use http:// (the connections inside the tunnel are TLS end to end)"
        )]
    );
    let errors = f.errors(&with_top(
        "network:\n  proxy:\n    url: socks5://u:s3cret@p:1080\n",
    ));
    no_secret(&errors);
    assert_eq!(
        errors,
        vec![f.at(
            5,
            10,
            "network.proxy: proxy `socks5://***@p:1080`: scheme `socks5` is not supported; use http://host:port"
        )]
    );
    f.assert_error(
        &with_top("network:\n  proxy: http://proxy:70000\n"),
        4,
        10,
        "network.proxy: proxy `http://proxy:70000` must be http://host:port (e.g. http://proxy.corp:3128)",
    );
}

#[test]
fn bad_environment_values_name_the_variable() {
    let f = Fixture::new().with_env("HTTPS_PROXY", "ftp://u:s3cret@p:21");
    let errors = f.errors(&with_top(""));
    no_secret(&errors);
    assert_eq!(
        errors,
        vec![f.at(
            1,
            1,
            "environment variable HTTPS_PROXY: proxy `ftp://***@p:21`: scheme `ftp` is not supported; use http://host:port"
        )]
    );
    // With a `network` section, at it.
    let f = Fixture::new()
        .with_env("HTTPS_PROXY", "http://p:3128")
        .with_env("NO_PROXY", "a.example,b.example:443");
    f.assert_error(
        &with_top("network:\n  imds_endpoint: http://127.0.0.1:1\n"),
        4,
        3,
        "environment variable NO_PROXY: no_proxy entry `b.example:443` has a port; entries name hosts, domains or IP networks (curl ignores ports)",
    );
}

#[test]
fn no_proxy_and_credentials_errors_point_at_their_entry() {
    let f = Fixture::new().with_env("BAD", "no-colon-s3cret");
    let errors = f.errors(&with_top(
        "network:
  proxy:
    url: http://u:s3cret@p:3128
    no_proxy: [ok.example, 'bad entry', 10.0.0.0/40]
    credentials_env: BAD
",
    ));
    no_secret(&errors);
    assert_eq!(
        errors,
        vec![
            f.at(
                6,
                28,
                "no_proxy entry `bad entry` is not a host, domain or IP network (e.g. .corp.example, 10.0.0.0/8)"
            ),
            f.at(6, 41, "no_proxy entry `10.0.0.0/40`: the prefix must be 0 to 32"),
            f.at(
                7,
                22,
                "the proxy URL already carries credentials; give them either in the URL or in credentials_env"
            ),
        ]
    );
    let errors = f.errors(&with_top(
        "network:\n  proxy:\n    url: http://p:3128\n    credentials_env: BAD\n",
    ));
    no_secret(&errors);
    assert_eq!(
        errors,
        vec![f.at(
            6,
            22,
            "environment variable BAD (credentials_env) must hold user:password"
        )]
    );
    f.assert_error(
        &with_top("network:\n  proxy:\n    url: http://p:3128\n    credentials_env: UNSET\n"),
        6,
        22,
        "environment variable UNSET (credentials_env) is not set",
    );
}

#[test]
fn unknown_keys_and_wrong_shapes_are_refused() {
    let f = Fixture::new();
    let errors = f.errors(&with_top(
        "network:\n  proxy: {url: 'http://p:3128', password: x}\n",
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("password"), "{errors:?}");
    assert!(errors[0].contains(":4:"), "{errors:?}");
    let errors = f.errors(&with_top("network:\n  proxy: [http://p:3128]\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(":4:"), "{errors:?}");
}

#[test]
fn debug_of_the_config_shows_neither_the_password_nor_its_basic_encoding() {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    for (top, env) in [
        (
            "network:\n  proxy: http://alice:s3cret@proxy.corp:3128\n",
            None,
        ),
        (
            "network:\n  proxy: {url: http://proxy.corp:3128, credentials_env: AUTH}\n",
            Some(("AUTH", "alice:s3cret")),
        ),
        (
            "",
            Some(("HTTPS_PROXY", "http://alice:s3cret@proxy.corp:3128")),
        ),
    ] {
        let mut f = Fixture::new();
        if let Some((k, v)) = env {
            f = f.with_env(k, v);
        }
        let cfg = f.load(&with_top(top)).unwrap();
        let proxy = cfg.network.proxy.as_ref().expect("a proxy");
        assert_eq!(
            proxy.authorization().map(|a| a.header_value().to_string()),
            Some(format!("Basic {encoded}")),
            "{top}"
        );
        for shown in [format!("{cfg:?}"), format!("{proxy:?}"), proxy.to_string()] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains(&encoded), "{shown}");
        }
    }
}
