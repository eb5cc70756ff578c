//! Shared fixture for the config tests: a temp dir with real certificate/key/token files and a
//! loader with a fixed environment. Each test writes a complete routes.yaml so positions in its
//! expected errors can be read off the text.

use std::path::{Path, PathBuf};

use popgate::config::{self, Config, ConfigErrors};

pub const TENANT: &str = "751a212b-4003-416e-b600-e1f48e40db9f";
pub const CLIENT: &str = "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

/// A self-signed certificate for `name` and its key, as PEM, with a new `alg` key pair.
pub fn self_signed_pem(alg: &'static rcgen::SignatureAlgorithm, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn self_signed() -> (String, String) {
    self_signed_pem(&rcgen::PKCS_ECDSA_P256_SHA256, "popgate.test")
}

impl Fixture {
    /// `app.pem`/`app.key` (a matching pair), `other.key` (matches nothing), `token.jwt`,
    /// `garbage.pem` (no PEM at all), `badcert.pem` (a CERTIFICATE block that is not X.509),
    /// `badkey.key` (a PRIVATE KEY block that is not a key).
    pub fn new() -> Self {
        let f = Self {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        };
        let (cert, key) = self_signed();
        f.write("app.pem", &cert);
        f.write("app.key", &key);
        f.write("other.key", &self_signed().1);
        f.write("token.jwt", "eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.\n");
        f.write("garbage.pem", "not pem\n");
        f.write(
            "badcert.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n",
        );
        f.write(
            "badkey.key",
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        );
        f
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name`; a `.key` file gets mode 0600, as popgate refuses world-readable keys.
    pub fn write(&self, name: &str, data: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        if name.ends_with(".key") {
            super::private_key_mode(&p);
        }
        p
    }

    /// The config file every test writes.
    pub fn config_path(&self) -> PathBuf {
        self.path("routes.yaml")
    }

    pub fn load(&self, yaml: &str) -> Result<Config, ConfigErrors> {
        let path = self.write("routes.yaml", yaml);
        let env = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        config::load_with_env(&path, &env)
    }

    /// The errors as `FILE:LINE:COL: message` strings.
    pub fn errors(&self, yaml: &str) -> Vec<String> {
        match self.load(yaml) {
            Ok(_) => panic!("config was accepted:\n{yaml}"),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    /// `{config path}:{line}:{col}: {message}`.
    pub fn at(&self, line: u32, col: u32, message: &str) -> String {
        format!("{}:{line}:{col}: {message}", self.config_path().display())
    }

    /// Asserts the config yields exactly this one error.
    pub fn assert_error(&self, yaml: &str, line: u32, col: u32, message: &str) {
        assert_eq!(self.errors(yaml), vec![self.at(line, col, message)]);
    }

    /// `path` as it appears in error messages (resolved against the config directory).
    pub fn shown(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// The head every test config shares: version, one listener, and identities `sami`, `app`
/// (certificate app) and `exchange` (certificate-less). Lines 1–9; routes start on line 10.
pub fn head() -> String {
    format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  sami: {{kind: managed_identity}}
  app:
    {{kind: confidential_client, tenant_id: {TENANT}, client_id: {CLIENT}, certificate: {{cert_file: app.pem, key_file: app.key}}}}
  exchange: {{kind: confidential_client, tenant_id: {TENANT}, client_id: 11111111-2222-3333-4444-555555555555}}
  wi: {{kind: workload_identity, client_id: {CLIENT}, tenant_id: {TENANT}, token_file: /var/run/token}}
  byo: {{kind: static, token_file: token.jwt, certificate: {{cert_file: app.pem, key_file: app.key}}}}
"
    )
}

/// `head()` plus `routes:` and the given route lines (route text starts on line 11).
pub fn with_routes(routes: &str) -> String {
    format!("{}routes:\n{routes}", head())
}

/// Asserts `path` exists (sanity for fixtures).
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Loads the config at `path` through popgate's real loader with no process environment,
/// panicking with every error if it is invalid.
pub fn load(path: &Path) -> Config {
    config::load_with_env(path, &|_| None).unwrap_or_else(|errors| {
        panic!(
            "config {}:\n{}",
            path.display(),
            errors
                .errors()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}
