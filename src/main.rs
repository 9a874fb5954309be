//! The `ai-rate-limiter` binary: parse settings, start the engine, serve until Ctrl-C / SIGTERM.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use ai_rate_limiter::config::{Cli, Command};
use ai_rate_limiter::{Engine, api, server};

/// mimalloc: glibc's malloc was ~10% of the embedded benchmark's CPU (many small, short-lived
/// allocations across threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Openapi) => {
            println!("{}", api::spec_json());
            return Ok(());
        }
        Some(Command::Migrate(args)) => {
            init_logging();
            // Opening a store applies its pending migrations.
            let store = ai_rate_limiter::store::connect(&args.database_url()).await?;
            tracing::info!(backend = store.backend(), "migrations applied");
            return Ok(());
        }
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    init_logging();
    let engine = Engine::start(args.engine_config()).await?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening; Swagger UI at /docs");
    server::run(listener, engine.clone(), server::shutdown_signal()).await?;
    engine.shutdown(args.shutdown_grace()).await;
    Ok(())
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}
