//! Domain types: what a workspace, a provider key, a message and a worker *are*.
//!
//! These types are validated at construction (`parse` / `TryFrom`) and carry no transport or
//! storage derives: the HTTP DTOs (`crate::api`) and the storage rows (`crate::store`) convert
//! to and from them at their own edges.

mod message;
mod provider_key;
mod worker;
mod workspace;

pub use message::{
    Message, MessageRequest, MessageResult, MessageStatus, NewMessage, ResponseFormat, Usage,
};
pub use provider_key::{
    ApiKey, KeyConfig, KeyUpdate, NewProviderKey, ProviderKey, ProviderKind, RateLimit, RatePeriod,
    parse_token_limit,
};
pub use worker::{WorkerInfo, WorkerState};
pub use workspace::{NewWorkspace, Workspace, WorkspaceId};
