//! The REST API (poem-openapi): the paths of the original Flask service, exactly, plus
//! `/health`, the Swagger UI at `/docs` and the spec at `/openapi.json`.
//!
//! One file per resource. Handlers only convert DTOs (which derive `Object`) to domain types
//! and call the [`Engine`]'s plain async functions; every error goes through [`ApiError`], and
//! anything poem itself rejects (malformed JSON, wrong types, unknown paths) is turned into the
//! same JSON error shape by [`error::json_errors`].

mod error;
mod health;
mod messages;
mod provider_keys;
mod types;
mod workers;
mod workspaces;

use std::net::SocketAddr;

use poem::middleware::{CatchPanic, NormalizePath, Tracing, TrailingSlash};
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

pub use error::{ApiError, ErrorBody};
pub use types::{Period, Text};

use crate::engine::Engine;

#[derive(Tags)]
enum ApiTags {
    /// Workspaces and their registration.
    Workspaces,
    /// Provider keys and their limits.
    ProviderKeys,
    /// Workers (consumers) of a workspace.
    Workers,
    /// Publishing messages and reading results.
    Messages,
    /// Liveness and backend state.
    Health,
}

type Apis = (
    workspaces::WorkspacesApi,
    provider_keys::ProviderKeysApi,
    workers::WorkersApi,
    messages::MessagesApi,
    health::HealthApi,
);

fn service(engine: Option<Engine>) -> OpenApiService<Apis, ()> {
    let apis = (
        workspaces::WorkspacesApi(engine.clone()),
        provider_keys::ProviderKeysApi(engine.clone()),
        workers::WorkersApi(engine.clone()),
        messages::MessagesApi(engine.clone()),
        health::HealthApi(engine),
    );
    OpenApiService::new(apis, "ai-rate-limiter", env!("CARGO_PKG_VERSION")).description(
        "Rate-limited, durable gateway to LLM providers: register workspaces with provider keys, \
         publish prompt messages, read results back by id.",
    )
}

/// The OpenAPI document (JSON), as served at `/openapi.json` and committed as `openapi/openapi.json`.
pub fn spec_json() -> String {
    service(None).spec()
}

/// The whole HTTP application of `engine`. `addr`, when known, is advertised in the spec.
pub fn app(engine: Engine, addr: Option<SocketAddr>) -> impl Endpoint {
    let mut api = service(Some(engine));
    if let Some(addr) = addr {
        api = api.server(format!("http://{addr}"));
    }
    let ui = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .nest("/docs", ui)
        .at("/openapi.json", spec)
        .nest("/", api)
        // The original paths end in a slash (`/workspaces/`, `/provider-keys/`); poem-openapi
        // routes them without it. Accept both.
        .with(NormalizePath::new(TrailingSlash::Trim))
        .with(CatchPanic::new())
        .with(Tracing)
        .catch_all_error(error::json_errors)
}
