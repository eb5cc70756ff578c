//! Listener, admin, inbound TLS, network and timeout rules, each asserting the exact
//! `FILE:LINE:COL: message`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::kit::config::Fixture;

/// Lines 1–N of `top`, then identities and one route.
fn with_top(top: &str) -> String {
    format!(
        "version: 1
{top}identities:
  sami: {{kind: managed_identity}}
routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: vanilla, identity: sami}}
"
    )
}

#[test]
fn listener_tls_admin_network_and_timeouts_load() {
    let f = Fixture::new();
    let cfg = f
        .load(&with_top(
            "listeners:
  - address: 127.0.0.1:3128
  - address: '[::1]:3129'
    tls: {cert_file: app.pem, key_file: app.key, client_ca_file: app.pem}
admin: {address: 127.0.0.1:9901}
network:
  imds_endpoint: http://127.0.0.1:40000
  resolve: {'WestUS3.mtlsauth.microsoft.com:443': '127.0.0.1:8443', '[::1]:8443': '127.0.0.1:9'}
  extra_ca_files: [app.pem]
timeouts: {connect: 2s, idle: 2m}
",
        ))
        .unwrap();
    assert_eq!(cfg.listeners.len(), 2);
    assert!(cfg.listeners[0].tls.is_none());
    let tls = cfg.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.client_ca.as_ref().unwrap().len(), 1);
    assert_eq!(cfg.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(
        cfg.network.imds_endpoint.to_string(),
        "http://127.0.0.1:40000/"
    );
    assert_eq!(
        cfg.network
            .resolve
            .get("westus3.mtlsauth.microsoft.com:443"),
        Some(&"127.0.0.1:8443".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        cfg.network.resolve.get("[::1]:8443"),
        Some(&"127.0.0.1:9".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(cfg.network.extra_ca.len(), 1);
    assert_eq!(cfg.timeouts.connect, Duration::from_secs(2));
    assert_eq!(cfg.timeouts.idle, Duration::from_secs(120));
    assert_eq!(
        cfg.timeouts.request,
        popgate::config::limits::DEFAULT_REQUEST_TIMEOUT
    );
    assert_eq!(cfg.routes[0].timeouts, cfg.timeouts);
}

#[test]
fn listener_addresses_must_parse() {
    let f = Fixture::new();
    f.assert_error(
        &with_top("listeners: [{address: 'localhost:3128'}]\n"),
        2,
        23,
        "`localhost:3128` is not an ip:port address (e.g. 127.0.0.1:3128)",
    );
}

#[test]
fn duplicate_listener_addresses() {
    let f = Fixture::new();
    f.assert_error(
        &with_top("listeners:\n  - address: 127.0.0.1:3128\n  - address: 127.0.0.1:3128\n"),
        4,
        14,
        "duplicate listener address 127.0.0.1:3128 (first at line 3)",
    );
}

#[test]
fn admin_address_must_parse_and_not_be_a_listener() {
    let f = Fixture::new();
    f.assert_error(
        &with_top("listeners: [{address: '127.0.0.1:3128'}]\nadmin: {address: ':9901'}\n"),
        3,
        18,
        "`:9901` is not an ip:port address (e.g. 127.0.0.1:3128)",
    );
    f.assert_error(
        &with_top("listeners: [{address: '127.0.0.1:3128'}]\nadmin: {address: '127.0.0.1:3128'}\n"),
        3,
        18,
        "admin address 127.0.0.1:3128 is also a listener address (line 2)",
    );
}

#[test]
fn inbound_tls_files_unreadable_or_mismatched() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_top(
            "listeners:
  - address: 127.0.0.1:3128
    tls: {cert_file: server.pem, key_file: app.key}
  - address: 127.0.0.1:3129
    tls: {cert_file: app.pem, key_file: other.key}
  - address: 127.0.0.1:3130
    tls: {cert_file: app.pem, key_file: app.key, client_ca_file: callers-ca.pem}
"
        )),
        vec![
            f.at(
                4,
                22,
                &format!(
                    "cannot read certificate file `{}`: No such file or directory (os error 2)",
                    f.shown("server.pem")
                )
            ),
            f.at(
                6,
                41,
                &format!(
                    "key file `{}` does not match the certificate in `{}`",
                    f.shown("other.key"),
                    f.shown("app.pem")
                )
            ),
            f.at(
                8,
                66,
                &format!(
                    "cannot read certificate file `{}`: No such file or directory (os error 2)",
                    f.shown("callers-ca.pem")
                )
            ),
        ]
    );
}

#[test]
fn resolve_keys_and_values() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_top(
            "listeners: [{address: '127.0.0.1:3128'}]
network:
  resolve:
    'login.microsoftonline.com': '127.0.0.1:8443'
    'mtlsauth.microsoft.com:443': 'localhost:8443'
"
        )),
        vec![
            f.at(5, 5, "resolve key `login.microsoftonline.com` must be host:port (e.g. login.microsoftonline.com:443)"),
            f.at(6, 35, "resolve value `localhost:8443` must be ip:port (e.g. 127.0.0.1:8443)"),
        ]
    );
}

#[test]
fn extra_ca_files_unreadable() {
    let f = Fixture::new();
    f.assert_error(
        &with_top("listeners: [{address: '127.0.0.1:3128'}]\nnetwork: {extra_ca_files: [app.pem, dev-ca.pem]}\n"),
        3,
        37,
        &format!(
            "cannot read certificate file `{}`: No such file or directory (os error 2)",
            f.shown("dev-ca.pem")
        ),
    );
}

#[test]
fn imds_endpoint_env_override() {
    let top =
        "listeners: [{address: '127.0.0.1:3128'}]\nnetwork: {imds_endpoint: 'http://10.0.0.1'}\n";
    let f = Fixture::new().with_env(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "http://127.0.0.1:41000",
    );
    let cfg = f.load(&with_top(top)).unwrap();
    assert_eq!(
        cfg.network.imds_endpoint.to_string(),
        "http://127.0.0.1:41000/"
    );

    let bad = Fixture::new().with_env("AZURE_POD_IDENTITY_AUTHORITY_HOST", "169.254.169.254");
    bad.assert_error(
        &with_top(top),
        3,
        26,
        "environment variable AZURE_POD_IDENTITY_AUTHORITY_HOST `169.254.169.254` must be an http(s) base URL like http://169.254.169.254",
    );

    let plain = Fixture::new();
    let cfg = plain
        .load(&with_top("listeners: [{address: '127.0.0.1:3128'}]\n"))
        .unwrap();
    assert_eq!(
        cfg.network.imds_endpoint.to_string(),
        "http://169.254.169.254/"
    );
    plain.assert_error(
        &with_top(
            "listeners: [{address: '127.0.0.1:3128'}]\nnetwork: {imds_endpoint: 'ftp://x/'}\n",
        ),
        3,
        26,
        "imds_endpoint `ftp://x/` must be an http(s) base URL like http://169.254.169.254",
    );
}

#[test]
fn global_timeouts_must_be_durations() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_top(
            "listeners: [{address: '127.0.0.1:3128'}]\ntimeouts: {connect: 0s, request: 5, idle: 25h}\n"
        )),
        vec![
            f.at(3, 21, "`0s`: a timeout must be greater than zero"),
            f.at(3, 34, "`5` is not a duration: write a whole number followed by ms, s, m or h (e.g. 500ms, 5s, 2m)"),
            f.at(3, 43, "`25h` is longer than the 24h maximum"),
        ]
    );
}

#[test]
fn resolve_key_given_twice_after_normalization() {
    let f = Fixture::new();
    f.assert_error(
        &with_top(
            "listeners: [{address: '127.0.0.1:3128'}]
network:
  resolve:
    'a.example:443': '127.0.0.1:1'
    'A.Example.:443': '127.0.0.1:2'
",
        ),
        6,
        5,
        "resolve key `a.example:443` appears twice",
    );
}

#[test]
fn client_ca_file_without_certificates() {
    let f = Fixture::new();
    f.assert_error(
        &with_top(
            "listeners:
  - address: 127.0.0.1:3128
    tls: {cert_file: app.pem, key_file: app.key, client_ca_file: garbage.pem}
",
        ),
        4,
        66,
        &format!(
            "certificate file `{}` has no CERTIFICATE PEM block",
            f.shown("garbage.pem")
        ),
    );
}

#[test]
fn bad_imds_env_override_without_a_config_key_points_at_the_file() {
    let f = Fixture::new().with_env("AZURE_POD_IDENTITY_AUTHORITY_HOST", "not a url");
    f.assert_error(
        &with_top("listeners: [{address: '127.0.0.1:3128'}]\n"),
        1,
        1,
        "environment variable AZURE_POD_IDENTITY_AUTHORITY_HOST `not a url` must be an http(s) base URL like http://169.254.169.254",
    );
}

/// Sets `name`'s permission bits in the fixture directory.
fn chmod(f: &Fixture, name: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(f.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_world_readable_listener_key_is_refused_unless_the_listener_allows_it() {
    // The attack this stops: any user on the host copies the listener's key and impersonates
    // popgate to its callers. Before, the key loaded with only a warning.
    let f = Fixture::new();
    let listener = |extra: &str| {
        with_top(&format!(
            "listeners:\n  - address: 127.0.0.1:3128\n    tls: {{cert_file: app.pem, key_file: app.key{extra}}}\n"
        ))
    };
    for mode in [0o644, 0o604, 0o602] {
        chmod(&f, "app.key", mode);
        f.assert_error(
            &listener(""),
            4,
            41,
            &format!(
                "key_file `{}` is readable or writable by any user (mode {mode:04o}); restrict it (chmod 600, or 640 for a group-readable mount such as a Kubernetes fsGroup secret) or set `allow_insecure_key_permissions: true` on the listener's `tls`",
                f.shown("app.key")
            ),
        );
    }
    // Allowed explicitly on the listener: loads.
    chmod(&f, "app.key", 0o644);
    let cfg = f
        .load(&listener(", allow_insecure_key_permissions: true"))
        .expect("allowed on the listener");
    assert!(cfg.listeners[0].tls.is_some());
    // Group-readable (a Kubernetes fsGroup mount): loads, with its warning.
    chmod(&f, "app.key", 0o640);
    f.load(&listener("")).expect("a group-readable key loads");
    chmod(&f, "app.key", 0o600);
    f.load(&listener("")).expect("a private key loads");
}
