//! # ai-rate-limiter
//!
//! An engine between applications and LLM providers. Workspaces hold provider keys, each with
//! its own limit (`rate_limit` requests per `rate_limit_period`); clients publish prompt
//! messages; per-workspace workers take them from a queue, call a provider through a key that
//! has capacity, and store the result, which clients read back by id.
//!
//! The promise: no key is ever driven past its limit, no accepted message is ever lost, and the
//! keys' combined capacity is used to the last request.
//!
//! ## Map of the crate
//! - [`engine`]: [`Engine`], the plain async operations (register, publish, scale...) that the
//!   HTTP API and embedding programs both call.
//! - `actors`: the ractor tree (supervisor -> workspace -> provider-key actors + consumers).
//! - [`limiter`]: the pure sliding-window logic of one key (time passed in; property-tested).
//! - [`domain`]: validated domain types (no transport or storage derives).
//! - [`store`]: storage traits, one per concern, their SQLite and PostgreSQL backends, and the
//!   group-commit writer of the hot path.
//! - [`queue`]: the queue trait, the in-process queue and the RabbitMQ queue.
//! - [`providers`]: the `Provider` trait; `openai`, `azure`, `anthropic`, `openai_compatible`, `mock`;
//!   rate-limit header parsing.
//! - [`api`]: the poem-openapi REST API (DTOs, one error mapping) and the Swagger UI.
//! - [`server`]: [`server::run`] serves the API on a listener the caller owns until the
//!   caller's shutdown future completes, which is what makes the engine embeddable.
//! - [`config`]: command-line and environment settings of the binary.
//!
//! ## Embedding
//! ```no_run
//! # async fn demo() -> ai_rate_limiter::Result<()> {
//! use ai_rate_limiter::{Engine, EngineConfig};
//! let engine = Engine::start(EngineConfig::new("sqlite::memory:")).await?;
//! # Ok(()) }
//! ```
//! See `examples/embed.rs` for the whole flow.

pub mod actors;
pub mod api;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod limiter;
pub mod providers;
pub mod queue;
pub mod server;
pub mod store;

pub use actors::RetryPolicy;
pub use engine::{Engine, EngineConfig, Published, WorkspaceView};
pub use error::{Error, Result};
