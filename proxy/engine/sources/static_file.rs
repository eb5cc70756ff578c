//! The `static` identity as a [`Credential`]: the token comes from a file (re-read when the cached
//! one is unusable, on `refresh` and after `invalidate`); the certificate is fixed until a config
//! reload, so `binding_changes` never fires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest;
use tokio::sync::{Mutex, watch};

use crate::certs::binding::BindingCert;
use crate::engine::cache::CachedToken;
use crate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};
use crate::engine::schedule::RefreshPolicy;
use crate::identity::static_token;
use crate::identity::token::{Token, TokenType};

/// A token read from a file and bound to a configured certificate.
pub(crate) struct StaticCredential {
    labels: CredentialLabels,
    inner: Arc<Inner>,
    state: Mutex<State>,
    /// Never sent on: the certificate only changes by config reload, which builds a new credential.
    binding: watch::Sender<u64>,
}

struct Inner {
    token_file: PathBuf,
    certificate: BindingCert,
    token_type: TokenType,
}

#[derive(Default)]
struct State {
    current: Option<CachedToken>,
    /// SHA-256 of the current token, to tell a re-read of the same file content from a new token.
    current_digest: Option<digest::Digest>,
    /// SHA-256 of a token the resource refused; the file holding it again is an error, not a token.
    refused_digest: Option<digest::Digest>,
    generation: u64,
}

impl std::fmt::Debug for StaticCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredential")
            .field("labels", &self.labels)
            .field("token_file", &self.inner.token_file)
            .field("certificate", &self.inner.certificate)
            .finish_non_exhaustive()
    }
}

fn same(a: &Option<digest::Digest>, b: &digest::Digest) -> bool {
    a.as_ref().is_some_and(|a| a.as_ref() == b.as_ref())
}

impl StaticCredential {
    /// A credential serving the token in `token_file`, presented with `certificate`.
    pub(crate) fn new(
        labels: CredentialLabels,
        token_file: PathBuf,
        certificate: BindingCert,
        token_type: TokenType,
    ) -> Self {
        Self {
            labels,
            inner: Arc::new(Inner {
                token_file,
                certificate,
                token_type,
            }),
            state: Mutex::new(State::default()),
            binding: watch::channel(0).0,
        }
    }

    fn error(&self, message: String) -> EngineError {
        EngineError {
            identity: self.labels.identity.clone(),
            message,
            aadsts: None,
            correlation_id: None,
            blocked_until: None,
            permanent: false,
        }
    }

    /// Reads the file off the async workers (it is small, but a slow disk must not stall them).
    async fn read(&self) -> Result<Token, EngineError> {
        let inner = Arc::clone(&self.inner);
        let loaded = tokio::task::spawn_blocking(move || {
            static_token::load(
                &inner.token_file,
                Some(inner.certificate.clone()),
                inner.token_type,
            )
        })
        .await;
        match loaded {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(e)) => Err(self.error(e.to_string())),
            Err(e) => Err(self.error(format!(
                "reading token file {} did not finish: {e}",
                self.inner.token_file.display()
            ))),
        }
    }

    /// Re-reads the file. `Ok(Some)`: a token other than the current one; `Ok(None)`: the file
    /// still holds the current token.
    async fn reload(&self, state: &mut State) -> Result<Option<CachedToken>, EngineError> {
        let token = self.read().await?;
        let digest = digest::digest(
            &digest::SHA256,
            token.access_token.expose_secret().as_bytes(),
        );
        if same(&state.refused_digest, &digest) {
            return Err(self.error(format!(
                "the token in {} was refused by the resource (401 invalid_token); replace the file",
                self.inner.token_file.display()
            )));
        }
        if same(&state.current_digest, &digest) {
            return Ok(None);
        }
        state.generation += 1;
        let cached = CachedToken {
            token,
            acquired_at: SystemTime::now(),
            generation: state.generation,
        };
        state.current = Some(cached.clone());
        state.current_digest = Some(digest);
        Ok(Some(cached))
    }

    fn usable(cached: &CachedToken) -> bool {
        RefreshPolicy::default().is_usable(
            cached.acquired_at,
            cached.token.expires_at,
            SystemTime::now(),
        )
    }

    fn unchanged_error(&self, cached: &CachedToken) -> EngineError {
        self.error(format!(
            "token file {} still holds the token that expires at {}; write a newer token to it",
            self.inner.token_file.display(),
            httpdate::fmt_http_date(cached.token.expires_at)
        ))
    }
}

impl Credential for StaticCredential {
    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }

    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if let Some(cached) = state.current.as_ref().filter(|c| Self::usable(c)) {
                return Ok(cached.clone());
            }
            match self.reload(&mut state).await? {
                Some(cached) => Ok(cached),
                // Same content as the cached token, which (when present) was not usable above.
                None => match state.current.clone() {
                    Some(cached) if Self::usable(&cached) => Ok(cached),
                    Some(cached) => Err(self.unchanged_error(&cached)),
                    None => Err(self.error(format!(
                        "token file {} holds no usable token",
                        self.inner.token_file.display()
                    ))),
                },
            }
        })
    }

    fn refresh(&self, seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if let Some(cached) = state
                .current
                .as_ref()
                .filter(|c| c.generation > seen && Self::usable(c))
            {
                return Ok(cached.clone());
            }
            match self.reload(&mut state).await? {
                Some(cached) => Ok(cached),
                None => match state.current.as_ref() {
                    Some(cached) => Err(self.unchanged_error(cached)),
                    None => Err(self.error(format!(
                        "token file {} holds no usable token",
                        self.inner.token_file.display()
                    ))),
                },
            }
        })
    }

    fn invalidate(&self, generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state
                .current
                .as_ref()
                .is_some_and(|c| c.generation == generation)
            {
                state.current = None;
                state.refused_digest = state.current_digest.take();
            }
        })
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.binding.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::time::Duration;

    fn binding() -> BindingCert {
        crate::certs::binding::test_binding("client")
    }

    fn jwt(cert: &BindingCert, lifetime: Duration, marker: &str) -> String {
        let exp = (SystemTime::now() + lifetime)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "exp": exp, "cnf": { "x5t#S256": cert.x5t_s256() }, "marker": marker
        });
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{body}.c2ln")
    }

    fn labels() -> CredentialLabels {
        CredentialLabels {
            identity: "byo".into(),
            identity_kind: "static",
            flow: "vanilla",
            token_type: TokenType::MtlsPop,
            leg1: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn serves_rereads_and_refuses_what_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let cert = binding();
        let first = jwt(&cert, HOUR, "one");
        std::fs::write(&file, &first).unwrap();
        let cred = StaticCredential::new(labels(), file.clone(), cert.clone(), TokenType::MtlsPop);

        let a = cred.get().await.unwrap();
        assert_eq!(a.generation, 1);
        assert_eq!(a.token.access_token.expose_secret(), first);
        assert_eq!(a.token.binding.as_ref(), Some(&cert));
        // Cached: the file is not needed while the token is usable.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(cred.get().await.unwrap().generation, 1);

        // Refresh re-reads: a missing file is an error naming it, and the cached token stays.
        let err = cred.refresh(1).await.unwrap_err();
        assert!(err.message.contains("cannot read token file"), "{err}");
        assert!(err.message.contains(&file.display().to_string()), "{err}");
        assert_eq!(err.identity, "byo");
        assert_eq!(cred.get().await.unwrap().generation, 1);

        // The same content is not a refresh.
        std::fs::write(&file, &first).unwrap();
        let err = cred.refresh(1).await.unwrap_err();
        assert!(err.message.contains("still holds the token"), "{err}");
        assert!(!err.message.contains(&first), "token leaked: {err}");

        // A new token is.
        let second = jwt(&cert, HOUR, "two");
        std::fs::write(&file, &second).unwrap();
        let b = cred.refresh(1).await.unwrap();
        assert_eq!(b.generation, 2);
        assert_eq!(b.token.access_token.expose_secret(), second);
        // A caller that saw generation 1 gets generation 2 without another read.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(cred.refresh(1).await.unwrap().generation, 2);

        // Invalidating an older generation changes nothing; the current one is dropped.
        cred.invalidate(1).await;
        assert_eq!(cred.get().await.unwrap().generation, 2);
        cred.invalidate(2).await;
        std::fs::write(&file, &second).unwrap();
        let err = cred.get().await.unwrap_err();
        assert!(err.message.contains("refused by the resource"), "{err}");
        let third = jwt(&cert, HOUR, "three");
        std::fs::write(&file, &third).unwrap();
        assert_eq!(cred.get().await.unwrap().generation, 3);
        assert_eq!(*cred.binding_changes().borrow(), 0);
    }

    #[tokio::test]
    async fn expired_or_mismatched_tokens_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let cert = binding();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"exp": 1_000_000_000u64, "cnf": {"x5t#S256": cert.x5t_s256()}})
                .to_string(),
        );
        std::fs::write(&file, format!("{header}.{body}.c2ln")).unwrap();
        let cred = StaticCredential::new(labels(), file.clone(), cert.clone(), TokenType::MtlsPop);
        let err = cred.get().await.unwrap_err();
        assert!(err.message.contains("expired at"), "{err}");

        std::fs::write(&file, jwt(&binding(), HOUR, "other cert")).unwrap();
        let err = cred.get().await.unwrap_err();
        assert!(err.message.contains("bound to certificate"), "{err}");
    }
}
