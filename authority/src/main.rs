//! `popgate-authority`: the local authority as a standalone process. Writes its CA and a demo
//! certificate app into the state directory, prints every endpoint, and serves until Ctrl-C.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use popgate_authority::{Authority, AuthorityConfig, admin};

#[derive(Parser, Debug)]
#[command(
    name = "popgate-authority",
    about = "Local stand-in for Entra ID's token endpoint, Azure IMDS and a token-bound resource"
)]
struct Args {
    /// Where the CA and app credentials are written (created if missing).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address every listener binds; must be loopback.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    #[arg(long, default_value_t = 0)]
    token_port: u16,
    #[arg(long, default_value_t = 0)]
    resource_port: u16,
    #[arg(long, default_value_t = 0)]
    imds_port: u16,
    #[arg(long, default_value_t = 0)]
    admin_port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !args.bind.is_loopback() {
        eprintln!(
            "error: --bind {} is not a loopback address; the authority is a local test double",
            args.bind
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let state_dir = args.state_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("popgate-authority-{}", std::process::id()))
    });
    std::fs::create_dir_all(&state_dir).map_err(|e| {
        format!(
            "cannot create the state directory {}: {e}",
            state_dir.display()
        )
    })?;
    let authority = Authority::start(AuthorityConfig {
        bind: args.bind,
        token_port: args.token_port,
        resource_port: args.resource_port,
        imds_port: args.imds_port,
        ..AuthorityConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;

    let ca_path = state_dir.join("ca.pem");
    authority.write_ca(&ca_path).map_err(|e| e.to_string())?;
    let (demo, credential) = authority
        .new_certificate_app("popgate-demo-app")
        .map_err(|e| e.to_string())?;
    let demo_cert = state_dir.join("demo-app.cert.pem");
    let demo_key = state_dir.join("demo-app.key.pem");
    admin::write_public(&demo_cert, credential.cert_pem.as_bytes())?;
    admin::write_private(&demo_key, credential.key_pem.as_bytes())?;

    let admin_listener = tokio::net::TcpListener::bind((args.bind, args.admin_port))
        .await
        .map_err(|e| {
            format!(
                "cannot bind the admin listener to {}:{}: {e}",
                args.bind, args.admin_port
            )
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| format!("cannot read the admin listener's address: {e}"))?;
    let _admin = admin::spawn(
        admin_listener,
        admin::AdminState {
            directory: authority.directory().clone(),
            pki: authority.pki().clone(),
            settings: authority.settings().clone(),
            faults: authority.faults().clone(),
            observations: authority.observations().clone(),
            state_dir: state_dir.clone(),
        },
    );

    let mut out = String::new();
    let token = authority.token_addr();
    out.push_str("popgate-authority ready\n");
    out.push_str(&format!("token endpoint: https://{token} (e.g. https://login.microsoftonline.com/{}/oauth2/v2.0/token, https://mtlsauth.microsoft.com/...)\n", authority.tenant_id()));
    out.push_str(&format!(
        "resource: https://{} (token-bound resource; every resource host via resolve)\n",
        authority.resource_addr()
    ));
    out.push_str(&format!(
        "imds: http://{} (IMDS v1 + v2; App Service at /msi/token)\n",
        authority.imds_addr()
    ));
    out.push_str(&format!("admin: http://{admin_addr}\n"));
    out.push_str(&format!("ca: {}\n", ca_path.display()));
    out.push_str(&format!("tenant: {}\n", authority.tenant_id()));
    out.push_str(&format!(
        "demo app: client_id={} x5t#S256={} cert={} key={}\n",
        demo.client_id,
        credential.x5t_s256,
        demo_cert.display(),
        demo_key.display()
    ));
    for entry in authority.resolve() {
        out.push_str(&format!("resolve: {entry}\n"));
    }
    out.push_str("serving until Ctrl-C\n");
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(stdout);

    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    tracing::info!("shutting down");
    authority.shutdown().await;
    Ok(())
}
