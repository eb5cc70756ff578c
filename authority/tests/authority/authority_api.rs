//! The `Authority` API: listeners, `resolve()`, shutdown, the seams for the IMDS and resource
//! servers, and the directory's refusals.

use crate::kit::token::*;
use popgate_authority::directory::{DEFAULT_UAMI_CLIENT_ID, DirectoryError};
use popgate_authority::imds::backend::ManagedIdentity;
use popgate_authority::pki::TOKEN_HOSTS;
use popgate_authority::{Authority, AuthorityConfig, AuthorityError, FederatedCredential};

#[tokio::test]
async fn resolve_maps_every_host_to_its_listener() {
    let authority = start().await;
    let entries = authority.resolve();
    for host in TOKEN_HOSTS {
        let entry = entries.iter().find(|e| e.host == *host).unwrap();
        assert_eq!(entry.addr, authority.token_addr());
        assert_eq!(entry.port, 443);
    }
    for host in [
        "graph.microsoft.com",
        "*.vault.azure.net",
        "*.blob.core.windows.net",
    ] {
        let entry = entries.iter().find(|e| e.host == host).unwrap();
        assert_eq!(entry.addr, authority.resource_addr());
    }
    let login = entries.iter().find(|e| e.host == LOGIN).unwrap();
    assert_eq!(
        login.to_string(),
        format!("{LOGIN}:443:127.0.0.1:{}", authority.token_addr().port())
    );
    for addr in [
        authority.token_addr(),
        authority.resource_addr(),
        authority.imds_addr(),
    ] {
        assert!(addr.ip().is_loopback() && addr.port() != 0);
    }
}

#[tokio::test]
async fn imds_and_resource_are_served_and_stop_with_the_authority() {
    let authority = start().await;
    let imds_addr = authority.imds_addr();
    let resource_addr = authority.resource_addr();
    // IMDS answers (and, as the real one, refuses a request without `Metadata: true`).
    let mut imds = tokio::net::TcpStream::connect(imds_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut imds,
        b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut imds, &mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("metadata header"), "{answer}");
    assert!(
        authority
            .imds_base_url()
            .ends_with(&imds_addr.port().to_string())
    );
    // The resource accepts connections.
    tokio::net::TcpStream::connect(resource_addr).await.unwrap();
    let token_addr = authority.token_addr();
    authority.shutdown().await;
    for addr in [token_addr, imds_addr, resource_addr] {
        let mut closed = false;
        // Listener tasks end asynchronously after their handles drop: poll, bounded.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(closed, "{addr} still accepts after shutdown");
    }
}

#[tokio::test]
async fn a_port_in_use_is_a_named_bind_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Authority::start(AuthorityConfig {
        token_port: port,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityError::Bind {
                listener: "token",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn directory_refusals() {
    let authority = start().await;
    let directory = authority.directory();
    let credential = authority.pki().issue_app_credential("x").unwrap();
    let der = credential.cert_der.as_ref();
    let client_id = uuid::Uuid::new_v4().to_string();
    directory
        .register_certificate_app(TENANT, &client_id, der)
        .unwrap();

    assert_eq!(
        directory
            .register_certificate_app(TENANT, &client_id, der)
            .unwrap_err(),
        DirectoryError::DuplicateClientId(client_id.clone())
    );
    assert!(matches!(
        directory.register_certificate_app(TENANT, DEFAULT_UAMI_CLIENT_ID, der),
        Err(DirectoryError::DuplicateClientId(_))
    ));
    assert!(matches!(
        directory.register_certificate_app(
            "11111111-1111-1111-1111-111111111111",
            &uuid::Uuid::new_v4().to_string(),
            der
        ),
        Err(DirectoryError::UnknownTenant(_))
    ));
    assert!(matches!(
        directory.register_certificate_app(TENANT, "my-app", der),
        Err(DirectoryError::NotAGuid(_))
    ));
    assert!(matches!(
        directory.register_certificate_app(TENANT, &uuid::Uuid::new_v4().to_string(), b"junk"),
        Err(DirectoryError::BadCertificate(_))
    ));
    assert!(matches!(
        directory.add_certificate(&uuid::Uuid::new_v4().to_string(), der),
        Err(DirectoryError::UnknownApp(_))
    ));
    assert!(matches!(
        directory.add_federated_credential(
            &uuid::Uuid::new_v4().to_string(),
            FederatedCredential::for_identity(TENANT, "o")
        ),
        Err(DirectoryError::UnknownApp(_))
    ));
    assert!(matches!(
        directory.add_tenant("contoso"),
        Err(DirectoryError::NotAGuid(_))
    ));
    assert!(matches!(
        directory.add_resource(popgate_authority::Resource {
            audience: "https://x/.default".into(),
            hosts: vec![],
            accepts: popgate_authority::directory::AcceptedTokens {
                bearer: true,
                mtls_pop: true
            },
        }),
        Err(DirectoryError::BadAudience(_))
    ));
    let mi = ManagedIdentity {
        client_id: DEFAULT_UAMI_CLIENT_ID.into(),
        object_id: uuid::Uuid::new_v4().to_string(),
        resource_id: None,
        tenant_id: TENANT.into(),
        system_assigned: false,
    };
    assert!(matches!(
        directory.add_managed_identity(mi.clone()),
        Err(DirectoryError::DuplicateClientId(_))
    ));
    let fresh = ManagedIdentity {
        client_id: uuid::Uuid::new_v4().to_string(),
        ..mi
    };
    directory.add_managed_identity(fresh.clone()).unwrap();
    assert_eq!(directory.managed_identity(&fresh.client_id), Some(fresh));
    // Debug of an app shows thumbprints, not certificate bytes.
    let app = directory.app(&client_id).unwrap();
    assert!(format!("{app:?}").contains(&credential.x5t_s256));
}

#[tokio::test]
async fn default_identities_use_the_seed_ids() {
    let authority = start().await;
    let all = authority.directory().managed_identities();
    assert_eq!(all.len(), 4);
    assert!(all[0].system_assigned);
    let uami = all
        .iter()
        .find(|m| m.client_id == DEFAULT_UAMI_CLIENT_ID)
        .unwrap();
    assert_eq!(uami.object_id, "ecb2ad92-3e30-4505-b79f-ac640d069f24");
    assert_eq!(
        uami.resource_id.as_deref(),
        Some(
            "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/MSIV2-Testing-MSALNET/providers/Microsoft.ManagedIdentity/userAssignedIdentities/msiv2uami"
        )
    );
    assert!(all.iter().all(|m| m.tenant_id == TENANT));
    assert_eq!(authority.tenant_id(), TENANT);
}
