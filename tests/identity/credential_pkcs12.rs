//! PKCS#12 certificate files: real `.pfx` files written by the `openssl` CLI (as users make them)
//! from rcgen-made certificates, loaded by popgate's loader, its config validation, its
//! certificate watcher and, end to end, used to get a PoP token from the local authority.
//!
//! Every test needs `openssl` on PATH; without it each test prints why it is skipped and passes,
//! except with `CI` set (`.ci/run`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kit::credentials::*;
use http::StatusCode;
use popgate::certs::binding::BindingCert;
use popgate::certs::cert_files;
use popgate::certs::pkcs12::{
    MAX_PKCS12_FILE_BYTES, MAX_PKCS12_ITERATIONS, Pkcs12Error, load_pkcs12,
};
use popgate::config::model::CertificateFiles;
use popgate::config::{self, Identity};
use popgate::identity::token::TokenType;
use zeroize::Zeroizing;

const PASSWORD: &str = "correct horse";
const PASSWORD_ENV: &str = "APP_PFX_PASSWORD";
const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "6325cd32-9911-41f3-819c-416cdf9104e7";

/// `true` when `openssl` can be run; otherwise prints why the calling test is skipped (fails
/// under CI).
fn have_openssl(test: &str) -> bool {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            crate::kit::skip_unless_ci(test, "the `openssl` CLI is not installed");
            false
        }
    }
}

fn pw(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_owned())
}

/// A CA, a leaf it signed and the leaf's key as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pkcs12 test ca");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["app.example".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The leaf as loaded from its PEM files: the reference a PFX load must equal.
    fn pem_binding(&self) -> BindingCert {
        cert_files::load_binding_cert(&self.path("leaf.pem"), &self.path("leaf.key")).unwrap()
    }

    /// `openssl pkcs12 -export` of the leaf and key into `name` with `extra` arguments;
    /// `None` (with the reason printed) when this openssl refuses the arguments.
    fn export(&self, name: &str, extra: &[&str]) -> Option<PathBuf> {
        export(
            &self.path("leaf.pem"),
            &self.path("leaf.key"),
            &self.path(name),
            PASSWORD,
            extra,
        )
    }
}

fn export(cert: &Path, key: &Path, out: &Path, password: &str, extra: &[&str]) -> Option<PathBuf> {
    let result = Command::new("openssl")
        .args(["pkcs12", "-export", "-in"])
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .arg("-out")
        .arg(out)
        .arg("-passout")
        .arg(format!("pass:{password}"))
        .args(extra)
        .output()
        .expect("openssl runs");
    if result.status.success() {
        Some(out.to_owned())
    } else {
        eprintln!(
            "openssl pkcs12 -export {extra:?} failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        None
    }
}

#[test]
fn default_export_aes256_hmac_sha256_loads_the_same_certificate() {
    if !have_openssl("default_export") {
        return;
    }
    let pki = Pki::new();
    let pfx = pki.export("app.pfx", &[]).expect("default export");
    let loaded = load_pkcs12(&pfx, &pw(PASSWORD)).unwrap();
    assert_eq!(loaded.x5t_s256(), pki.pem_binding().x5t_s256());
    assert_eq!(loaded.leaf_der(), pki.pem_binding().leaf_der());
}

#[test]
fn aes128_and_sha1_variants_load() {
    if !have_openssl("aes128_and_sha1_variants") {
        return;
    }
    let pki = Pki::new();
    let expected = pki.pem_binding();
    let variants: &[(&str, &[&str])] = &[
        (
            "aes128.pfx",
            &["-certpbe", "AES-128-CBC", "-keypbe", "AES-128-CBC"],
        ),
        (
            "aes192.pfx",
            &["-certpbe", "AES-192-CBC", "-keypbe", "AES-192-CBC"],
        ),
        ("sha1mac.pfx", &["-macalg", "sha1"]),
        ("sha512mac.pfx", &["-macalg", "sha512"]),
        ("plaincerts.pfx", &["-certpbe", "NONE"]),
        // Unencrypted key: a `keyBag` instead of a `pkcs8ShroudedKeyBag`.
        ("keybag.pfx", &["-certpbe", "NONE", "-keypbe", "NONE"]),
    ];
    for (name, args) in variants {
        let pfx = pki.export(name, args).expect("variant export");
        let loaded = load_pkcs12(&pfx, &pw(PASSWORD)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.x5t_s256(), expected.x5t_s256(), "{name}");
    }
}

#[test]
fn non_ascii_password_is_encoded_as_openssl_does() {
    if !have_openssl("non_ascii_password") {
        return;
    }
    let pki = Pki::new();
    let password = "pässwörd-✓";
    let pfx = export(
        &pki.path("leaf.pem"),
        &pki.path("leaf.key"),
        &pki.path("utf8.pfx"),
        password,
        &[],
    )
    .expect("export");
    let loaded = load_pkcs12(&pfx, &pw(password)).unwrap();
    assert_eq!(loaded.x5t_s256(), pki.pem_binding().x5t_s256());
}

#[test]
fn ca_chain_is_ordered_leaf_first() {
    if !have_openssl("ca_chain") {
        return;
    }
    let pki = Pki::new();
    let pfx = pki
        .export(
            "chain.pfx",
            &["-certfile", pki.path("ca.pem").to_str().unwrap()],
        )
        .expect("export with chain");
    let loaded = load_pkcs12(&pfx, &pw(PASSWORD)).unwrap();
    assert_eq!(loaded.x5t_s256(), pki.pem_binding().x5t_s256());
    let chain = &loaded.certified_key().cert;
    assert_eq!(chain.len(), 2);
    let ca = cert_files::load_cert_chain(&pki.path("ca.pem")).unwrap();
    assert_eq!(chain[1], ca[0], "the CA follows the leaf");
}

#[test]
fn legacy_export_is_refused_with_the_fix() {
    if !have_openssl("legacy_export") {
        return;
    }
    let pki = Pki::new();
    let Some(pfx) = pki.export("legacy.pfx", &["-legacy"]) else {
        crate::kit::skip_unless_ci("legacy_export", "this openssl has no legacy provider");
        return;
    };
    let err = load_pkcs12(&pfx, &pw(PASSWORD)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Pkcs12Error::Unsupported { .. }), "{text}");
    assert!(text.contains("legacy algorithm"), "{text}");
    assert!(
        text.contains("pbeWithSHAAnd40BitRC2-CBC")
            || text.contains("pbeWithSHAAnd3-KeyTripleDES-CBC"),
        "{text}"
    );
    assert!(
        text.contains(
            "openssl pkcs12 -legacy -in old.pfx -nodes -out plain.pem && openssl pkcs12 -export -in plain.pem -out new.pfx"
        ),
        "{text}"
    );
    assert!(text.contains(&pfx.display().to_string()), "{text}");

    // The suggested fix works: the converted file loads.
    let plain = pki.path("plain.pem");
    let fixed = pki.path("new.pfx");
    let pass = format!("pass:{PASSWORD}");
    let step1 = Command::new("openssl")
        .args(["pkcs12", "-legacy", "-in"])
        .arg(&pfx)
        .args(["-nodes", "-passin", &pass, "-out"])
        .arg(&plain)
        .status()
        .unwrap();
    assert!(step1.success());
    let step2 = Command::new("openssl")
        .args(["pkcs12", "-export", "-in"])
        .arg(&plain)
        .args(["-passout", &pass, "-out"])
        .arg(&fixed)
        .status()
        .unwrap();
    assert!(step2.success());
    let loaded = load_pkcs12(&fixed, &pw(PASSWORD)).unwrap();
    assert_eq!(loaded.x5t_s256(), pki.pem_binding().x5t_s256());
}

#[test]
fn a_pfx_without_a_mac_is_refused() {
    if !have_openssl("no_mac") {
        return;
    }
    let pki = Pki::new();
    let pfx = pki.export("nomac.pfx", &["-nomac"]).expect("export");
    assert_eq!(
        load_pkcs12(&pfx, &pw(PASSWORD)).unwrap_err().to_string(),
        format!(
            "PKCS#12 file `{}` has no password MAC (integrity check); re-export it with a password",
            pfx.display()
        )
    );
}

#[test]
fn iteration_counts_over_the_cap_are_refused() {
    if !have_openssl("iteration_cap") {
        return;
    }
    let pki = Pki::new();
    // One more than the cap, for the MAC and the key; openssl spends a few seconds on it,
    // popgate must refuse before deriving anything.
    let over = (MAX_PKCS12_ITERATIONS + 1).to_string();
    let pfx = pki
        .export("slow.pfx", &["-iter", &over, "-certpbe", "NONE"])
        .expect("export");
    let err = load_pkcs12(&pfx, &pw(PASSWORD)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "PKCS#12 file `{}` asks for {over} MAC iterations; popgate accepts 1 to {MAX_PKCS12_ITERATIONS}",
            pfx.display()
        )
    );
}

#[test]
fn wrong_password_says_the_mac_does_not_verify() {
    if !have_openssl("wrong_password") {
        return;
    }
    let pki = Pki::new();
    let pfx = pki.export("app.pfx", &[]).unwrap();
    let err = load_pkcs12(&pfx, &pw("hunter2-wrong")).unwrap_err();
    assert!(matches!(err, Pkcs12Error::MacMismatch { .. }), "{err}");
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "PKCS#12 file `{}`: the MAC does not verify — the password is wrong or the file is corrupt",
            pfx.display()
        )
    );
    assert!(!text.contains("hunter2") && !format!("{err:?}").contains("hunter2"));
}

#[test]
fn a_tampered_file_fails_the_mac_with_the_right_password() {
    if !have_openssl("tampered") {
        return;
    }
    let pki = Pki::new();
    let pfx = pki.export("app.pfx", &[]).unwrap();
    let mut bytes = std::fs::read(&pfx).unwrap();
    // The middle of the file is inside the MAC-protected authenticated safe.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pfx, &bytes).unwrap();
    assert!(matches!(
        load_pkcs12(&pfx, &pw(PASSWORD)).unwrap_err(),
        Pkcs12Error::MacMismatch { .. }
    ));
}

#[test]
fn truncated_and_non_pkcs12_files_are_malformed() {
    if !have_openssl("truncated") {
        return;
    }
    let pki = Pki::new();
    let pfx = pki.export("app.pfx", &[]).unwrap();
    let bytes = std::fs::read(&pfx).unwrap();
    let cut = pki.path("cut.pfx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_pkcs12(&cut, &pw(PASSWORD)).unwrap_err();
    assert!(matches!(err, Pkcs12Error::Malformed { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "PKCS#12 file `{}` is not a valid PKCS#12 (DER) file: ",
            cut.display()
        )),
        "{err}"
    );
    // A PEM file given as a PKCS#12 file.
    let err = load_pkcs12(&pki.path("leaf.pem"), &pw(PASSWORD)).unwrap_err();
    assert!(matches!(err, Pkcs12Error::Malformed { .. }), "{err}");
}

#[test]
fn missing_and_oversized_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.pfx");
    let err = load_pkcs12(&missing, &pw(PASSWORD)).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot read PKCS#12 file `{}`: ",
            missing.display()
        )),
        "{err}"
    );
    let big = dir.path().join("big.pfx");
    std::fs::write(&big, vec![0u8; MAX_PKCS12_FILE_BYTES as usize + 1]).unwrap();
    assert!(matches!(
        load_pkcs12(&big, &pw(PASSWORD)).unwrap_err(),
        Pkcs12Error::TooLarge { .. }
    ));
}

#[test]
fn a_pfx_without_a_key_is_refused() {
    if !have_openssl("no_key") {
        return;
    }
    let pki = Pki::new();
    let out = pki.path("nokey.pfx");
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-nokeys", "-in"])
        .arg(pki.path("leaf.pem"))
        .arg("-out")
        .arg(&out)
        .arg("-passout")
        .arg(format!("pass:{PASSWORD}"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = load_pkcs12(&out, &pw(PASSWORD)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "PKCS#12 file `{}` holds no private key (export it with its key)",
            out.display()
        )
    );
}

// ---- configuration ----

/// A config whose identity `app` has `certificate` on line 8 (its value starts at column 18).
fn config_with(certificate: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  app:
    kind: confidential_client
    tenant_id: {TENANT_ID}
    client_id: {CLIENT_ID}
    certificate: {certificate}
routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: vanilla, identity: app, token_type: mtls_pop}}
"
    )
}

/// Column (1-based) of `needle` on line 8 of `config_with(certificate)`.
fn col(certificate: &str, needle: &str) -> u32 {
    let line = format!("    certificate: {certificate}");
    u32::try_from(line.find(needle).expect("needle on the line") + 1).unwrap()
}

struct ConfigFixture {
    pki: Pki,
    env: Vec<(String, String)>,
}

impl ConfigFixture {
    fn new() -> Self {
        let pki = Pki::new();
        let pfx = pki.export("app.pfx", &[]).expect("export");
        chmod(&pfx, 0o600);
        Self {
            pki,
            env: vec![(PASSWORD_ENV.into(), PASSWORD.into())],
        }
    }

    fn config_path(&self) -> PathBuf {
        self.pki.path("routes.yaml")
    }

    fn load(&self, certificate: &str) -> Result<config::Config, config::ConfigErrors> {
        std::fs::write(self.config_path(), config_with(certificate)).unwrap();
        let env = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        config::load_with_env(&self.config_path(), &env)
    }

    fn errors(&self, certificate: &str) -> Vec<String> {
        match self.load(certificate) {
            Ok(_) => panic!("accepted: {certificate}"),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_error(&self, certificate: &str, needle: &str, message: &str) {
        assert_eq!(
            self.errors(certificate),
            vec![format!(
                "{}:8:{}: {message}",
                self.config_path().display(),
                col(certificate, needle)
            )]
        );
    }
}

const PFX_CERT: &str = "{pkcs12_file: app.pfx, password_env: APP_PFX_PASSWORD}";

#[test]
fn config_accepts_a_pkcs12_certificate() {
    if !have_openssl("config_accepts") {
        return;
    }
    let f = ConfigFixture::new();
    let cfg = f.load(PFX_CERT).unwrap_or_else(|e| panic!("{e}"));
    let Some(Identity::ConfidentialClient(app)) = cfg.identity("app") else {
        panic!("app")
    };
    assert_eq!(
        app.certificate.as_ref().unwrap().x5t_s256(),
        f.pki.pem_binding().x5t_s256()
    );
    let Some(CertificateFiles::Pkcs12 { file, password }) = &app.certificate_files else {
        panic!("PKCS#12 files: {:?}", app.certificate_files)
    };
    assert!(file.ends_with("app.pfx"));
    let shown = format!("{:?}", app.certificate_files);
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert_eq!(password.expose().as_str(), PASSWORD);
}

#[test]
fn config_errors_point_at_the_mistake() {
    if !have_openssl("config_errors") {
        return;
    }
    let f = ConfigFixture::new();
    let both = "{cert_file: leaf.pem, key_file: leaf.key, pkcs12_file: app.pfx, password_env: APP_PFX_PASSWORD}";
    f.assert_error(
        both,
        "{",
        "certificate takes either `cert_file` + `key_file` (PEM) or `pkcs12_file` + `password_env` (PKCS#12), not both",
    );
    f.assert_error(
        "{}",
        "{",
        "certificate needs `cert_file` + `key_file` (PEM) or `pkcs12_file` + `password_env` (PKCS#12)",
    );
    f.assert_error(
        "{pkcs12_file: app.pfx}",
        "{",
        "certificate with `pkcs12_file` needs `password_env`",
    );
    let unset = "{pkcs12_file: app.pfx, password_env: NOT_SET_ANYWHERE}";
    f.assert_error(
        unset,
        "NOT_SET",
        "password_env: environment variable `NOT_SET_ANYWHERE` is not set or is empty",
    );
    let missing = "{pkcs12_file: absent.pfx, password_env: APP_PFX_PASSWORD}";
    let errors = f.errors(missing);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}:8:{}: cannot read PKCS#12 file `{}`: ",
            f.config_path().display(),
            col(missing, "absent"),
            f.pki.path("absent.pfx").display()
        )),
        "{errors:?}"
    );
}

#[test]
fn config_wrong_password_and_legacy_file_point_at_the_file() {
    if !have_openssl("config_wrong_password") {
        return;
    }
    let mut f = ConfigFixture::new();
    f.env = vec![(PASSWORD_ENV.into(), "hunter2-wrong".into())];
    let pfx = f.pki.path("app.pfx");
    f.assert_error(
        PFX_CERT,
        "app.pfx",
        &format!(
            "PKCS#12 file `{}`: the MAC does not verify — the password is wrong or the file is corrupt",
            pfx.display()
        ),
    );
    for e in f.errors(PFX_CERT) {
        assert!(!e.contains("hunter2"), "{e}");
    }
    f.env = vec![(PASSWORD_ENV.into(), PASSWORD.into())];
    if f.pki.export("legacy.pfx", &["-legacy"]).is_none() {
        crate::kit::skip_unless_ci("legacy part", "this openssl has no legacy provider");
        return;
    }
    let legacy = "{pkcs12_file: legacy.pfx, password_env: APP_PFX_PASSWORD}";
    let errors = f.errors(legacy);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let prefix = format!(
        "{}:8:{}: PKCS#12 file `{}` uses ",
        f.config_path().display(),
        col(legacy, "legacy.pfx"),
        f.pki.path("legacy.pfx").display()
    );
    assert!(errors[0].starts_with(&prefix), "{errors:?}");
    assert!(errors[0].contains("legacy algorithm"), "{errors:?}");
}

// ---- end to end: engine, watcher, local authority ----

/// Loads `env`'s routes.yaml for `routes` with identity `app` switched to the PKCS#12 file
/// `app.pfx` (password in `APP_PFX_PASSWORD`).
fn pkcs12_config(env: &Env, routes_yaml: &str) -> config::Config {
    // Written (and loaded) once with the PEM pair, then rewritten to use the PFX.
    env.config("", routes_yaml);
    let path = env.path("routes.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let pem = "certificate: { cert_file: app.pem, key_file: app.key }";
    assert!(yaml.contains(pem), "fixture config changed shape");
    let yaml = yaml.replace(
        pem,
        "certificate: { pkcs12_file: app.pfx, password_env: APP_PFX_PASSWORD }",
    );
    std::fs::write(&path, yaml).unwrap();
    let lookup = |name: &str| (name == PASSWORD_ENV).then(|| PASSWORD.to_owned());
    config::load_with_env(&path, &lookup).unwrap_or_else(|e| panic!("config: {e}"))
}

/// Writes `cert_pem`/`key_pem` as a PFX and renames it over `app.pfx` (an atomic swap).
fn install_pfx(env: &Env, cert_pem: &str, key_pem: &str, tag: &str) {
    let cert = env.path(&format!("{tag}.pem"));
    let key = env.path(&format!("{tag}.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let staged = env.path(&format!("{tag}.pfx"));
    export(&cert, &key, &staged, PASSWORD, &[]).expect("export");
    std::fs::rename(&staged, env.path("app.pfx")).unwrap();
}

#[tokio::test]
async fn pkcs12_app_gets_a_pop_token_bound_to_the_pfx_certificate_and_follows_rotation() {
    if !have_openssl("pkcs12_end_to_end") {
        return;
    }
    let env = start().await;
    install_pfx(
        &env,
        &env.app_credential.cert_pem,
        &env.app_credential.key_pem,
        "v1",
    );
    let config = pkcs12_config(
        &env,
        &routes(&[(
            "r",
            GRAPH,
            "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
        )]),
    );
    let deps = env.deps(&config);
    let credential = env.build(&config, &deps).remove("r").expect("route r");

    let first = get(&credential).await;
    assert_eq!(first.token.token_type, TokenType::MtlsPop);
    assert_eq!(cnf(&first.token), env.app_credential.x5t_s256);
    assert_eq!(
        first.token.binding.as_ref().unwrap().x5t_s256(),
        env.app_credential.x5t_s256
    );
    assert_eq!(
        env.call_resource("graph.microsoft.com", &first.token).await,
        StatusCode::OK
    );
    let seen = *credential.binding_changes().borrow();

    // A rotated PFX (new certificate registered alongside the old one) → new binding, new token.
    let next = env.register_rotated_credential();
    install_pfx(&env, &next.cert_pem, &next.key_pem, "v2");
    binding_changed(&credential, seen).await;
    let second = get(&credential).await;
    assert_eq!(cnf(&second.token), next.x5t_s256);
    assert_eq!(
        env.call_resource("graph.microsoft.com", &second.token)
            .await,
        StatusCode::OK
    );
}

/// Sets `path`'s permission bits.
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_world_readable_pkcs12_file_is_refused_unless_the_identity_allows_it() {
    // The attack this stops: the PKCS#12 file holds the private key; any user on the host who
    // reads it (the password is in the environment of a process they may inspect, or weak)
    // presents the certificate the tokens are bound to. Before, it loaded silently.
    if !have_openssl("world_readable_pkcs12") {
        return;
    }
    let f = ConfigFixture::new();
    let pfx = f.pki.path("app.pfx");
    for mode in [0o644, 0o604, 0o602] {
        chmod(&pfx, mode);
        f.assert_error(
            PFX_CERT,
            "app.pfx",
            &format!(
                "pkcs12_file `{}` is readable or writable by any user (mode {mode:04o}); restrict it (chmod 600, or 640 for a group-readable mount such as a Kubernetes fsGroup secret) or set `allow_insecure_key_permissions: true` on the identity",
                pfx.display()
            ),
        );
    }
    chmod(&pfx, 0o644);
    let allowed = format!("{PFX_CERT}\n    allow_insecure_key_permissions: true");
    f.load(&allowed)
        .unwrap_or_else(|e| panic!("allowed on the identity: {e}"));
    // Group-readable (a Kubernetes fsGroup mount): loads, with a warning.
    chmod(&pfx, 0o640);
    f.load(PFX_CERT)
        .unwrap_or_else(|e| panic!("group-readable: {e}"));
}
