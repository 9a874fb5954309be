//! Settings of the `ai-rate-limiter` binary, from flags and environment variables (clap).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineConfig;

/// The default SQLite database: a file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://ai-rate-limiter.db?mode=rwc";

/// ai-rate-limiter: a rate-limiting engine between applications and LLM providers.
#[derive(Debug, Parser)]
#[command(
    name = "ai-rate-limiter",
    version,
    about,
    long_about = None,
    after_help = "Other environment variables:\n  SQLALCHEMY_DATABASE_URI  alias of DATABASE_URL (the original service's name)\n  RUST_LOG                 log filter, e.g. info or ai_rate_limiter=debug (default: info)"
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve` (accepted without the subcommand too).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the REST API and the workers (the default).
    Serve(ServeArgs),
    /// Print the OpenAPI document (JSON) to stdout.
    Openapi,
    /// Apply the database migrations and exit (for operators who run them as a separate step).
    Migrate(MigrateArgs),
}

/// Options of `migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database URL (as for `serve`; `SQLALCHEMY_DATABASE_URI` accepted as an alias).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl MigrateArgs {
    /// The database URL: the flag / `DATABASE_URL`, else `SQLALCHEMY_DATABASE_URI`, else the default.
    pub fn database_url(&self) -> String {
        resolve_database_url(self.database_url.clone())
    }
}

fn resolve_database_url(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("SQLALCHEMY_DATABASE_URI").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:5000")]
    pub bind: SocketAddr,
    /// Database URL. Default: a SQLite file `ai-rate-limiter.db` in the working directory.
    /// `SQLALCHEMY_DATABASE_URI` is accepted as an alias (the original service's name).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ URL (`amqp://...`). Unset: the in-process queue.
    #[arg(long, env = "RABBITMQ_URL")]
    pub rabbitmq_url: Option<String>,
    /// Prefix of RabbitMQ queue names: `<prefix>.ws.<workspace_id>`.
    #[arg(long, env = "QUEUE_PREFIX", default_value = "ai-rate-limiter")]
    pub queue_prefix: String,
    /// Most workers one workspace may be scaled to.
    #[arg(long, env = "MAX_WORKERS", default_value_t = 256)]
    pub max_workers: u32,
    /// Provider calls per message before it fails (429s are not counted).
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Milliseconds added to every key's period, absorbing the jitter between a request leaving
    /// and the provider receiving it (0 measures windows on send times exactly).
    #[arg(long, env = "LIMIT_GUARD_MS", default_value_t = 5)]
    pub limit_guard_ms: u64,
    /// Seconds to let workers finish the call in flight at shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl ServeArgs {
    /// The database URL: the flag / `DATABASE_URL`, else `SQLALCHEMY_DATABASE_URI`, else the default.
    pub fn database_url(&self) -> String {
        resolve_database_url(self.database_url.clone())
    }

    /// The engine configuration these settings describe.
    pub fn engine_config(&self) -> EngineConfig {
        let mut c = EngineConfig::new(self.database_url());
        c.rabbitmq_url = self.rabbitmq_url.clone().filter(|s| !s.trim().is_empty());
        c.max_workers = self.max_workers;
        c.queue_prefix = self.queue_prefix.clone();
        c.limit_guard = Duration::from_millis(self.limit_guard_ms);
        c.retry.max_attempts = self.max_attempts.max(1);
        c
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::try_parse_from(["ai-rate-limiter"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.bind.to_string(), "127.0.0.1:5000");
        assert_eq!(cli.serve.max_workers, 256);
    }

    #[test]
    fn serve_takes_its_flags() {
        let cli = Cli::try_parse_from([
            "ai-rate-limiter",
            "serve",
            "--bind",
            "0.0.0.0:8080",
            "--database-url",
            "sqlite::memory:",
        ])
        .unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.database_url(), "sqlite::memory:");
        assert_eq!(args.bind.port(), 8080);
    }
}
