//! `berth`: parses the command line and hands over to the library.

use anyhow::Context;
use berth_server::admin::{self, TenancyCommand, UserCommand};
use berth_server::config::{Cli, Command, Config, CredentialsCommand};
use berth_server::{app, credentials};
use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

// Requests allocate and free buffers across threads (a body read on a worker is freed on
// the SQLite writer); mimalloc does this with less CPU than glibc's malloc (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(*args)?;
            tracing::info!(?config, "starting");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            app::run(config, shutdown).await
        }
        Command::Credentials(CredentialsCommand::Create(args)) => {
            let store = app::open_store(&args.data_dir, &args.store.chosen()?, false, false, 0).await?.store;
            let tenancy = credentials::tenancy(store.as_ref(), &args.tenancy).await?;
            let issued =
                credentials::issue(store.as_ref(), &tenancy, &args.user, &args.out, &args.endpoint, &args.region)
                    .await
                    .context("cannot create credentials")?;
            store.close().await?;
            println!("created user {} ({}) in tenancy {}", args.user, issued.user_id, tenancy.name);
            println!("OCI config for the SDK and CLI: {}", args.out.join("oci-config").display());
            Ok(())
        }
        Command::Queue(args) => admin::run_queue(args).await,
        Command::Tenancy(TenancyCommand::List { data_dir, store, json }) => {
            admin::list_tenancies(&data_dir, store, json).await
        }
        Command::User(UserCommand::List { data_dir, store, tenancy, json }) => {
            admin::list_users(&data_dir, store, tenancy.as_deref(), json).await
        }
    }
}

/// Fires `shutdown` on SIGTERM or Ctrl-C.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    shutdown.cancel();
}
