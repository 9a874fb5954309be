//! `/message/publish`, `/message/{message_id}`.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::error::ApiError;
use super::types::Text;
use crate::domain::{
    Message, MessageRequest, MessageResult, MessageStatus, NewMessage, ResponseFormat, WorkspaceId,
};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// `POST /message/publish`: the workspace and the message's fields.
#[derive(Debug, Clone, Object)]
pub struct PublishRequest {
    /// Target workspace.
    pub workspace_id: Text,
    /// The message.
    #[oai(flatten)]
    pub message: BatchItem,
}

impl TryFrom<PublishRequest> for NewMessage {
    type Error = Error;
    fn try_from(r: PublishRequest) -> Result<Self> {
        let workspace_id = WorkspaceId::parse(r.workspace_id.as_str())?;
        let (id, request) = r.message.try_into()?;
        Ok(NewMessage {
            id,
            workspace_id,
            request,
        })
    }
}

impl TryFrom<BatchItem> for (Option<Uuid>, MessageRequest) {
    type Error = Error;
    fn try_from(r: BatchItem) -> Result<Self> {
        let request = MessageRequest {
            prompt: r.prompt.into_inner(),
            content: r.content.map(Text::into_inner),
            system_prompt: r.system_prompt.map(Text::into_inner),
            model: r.model.map(Text::into_inner),
            sequence_index: r.sequence_index,
            html_tag: r.html_tag.map(Text::into_inner),
            response_format: r
                .response_format
                .as_ref()
                .map(|f| ResponseFormat::parse(f.as_str()))
                .transpose()?
                .unwrap_or_default(),
        }
        .validate()?;
        Ok((r.message_id, request))
    }
}

/// One message: what a publish carries besides `workspace_id` (one item of a batch).
#[derive(Debug, Clone, Object)]
pub struct BatchItem {
    /// The instruction.
    pub prompt: Text,
    /// Text the prompt works on; sent after the prompt and a blank line.
    pub content: Option<Text>,
    /// Sent as the system message.
    pub system_prompt: Option<Text>,
    /// Model; defaults to the chosen key's `config.model`. Only keys serving it are used.
    pub model: Option<Text>,
    /// Your position of this message in a document (stored and returned, never sent).
    pub sequence_index: Option<i64>,
    /// Your HTML tag for the result (stored and returned, never sent).
    pub html_tag: Option<Text>,
    /// `"json"` asks the provider for a JSON object and stores it parsed; `"text"` (default).
    pub response_format: Option<Text>,
    /// Your own id (UUID) to make publishing idempotent: the same id again returns the existing message.
    pub message_id: Option<Uuid>,
}

/// `POST /message/publish/batch`.
#[derive(Debug, Clone, Object)]
pub struct BatchPublishRequest {
    /// Target workspace.
    pub workspace_id: Text,
    /// 1 to 1000 messages (a document published paragraph by paragraph, with `sequence_index`).
    pub messages: Vec<BatchItem>,
}

/// The answer to a batch publish.
#[derive(Debug, Object)]
pub struct BatchPublishResponse {
    /// True.
    pub success: bool,
    /// The workspace.
    pub workspace_id: String,
    /// Messages in the batch.
    pub count: u64,
    /// How many were created (the others already existed under their `message_id`).
    pub created: u64,
    /// The ids, in the order of the request.
    pub message_ids: Vec<Uuid>,
}

#[derive(ApiResponse)]
pub enum BatchPublishResult {
    /// Stored in one transaction and queued.
    #[oai(status = 201)]
    Created(Json<BatchPublishResponse>),
}

/// A page of a workspace's messages.
#[derive(Debug, Object)]
pub struct MessageListResponse {
    /// True.
    pub success: bool,
    /// The workspace.
    pub workspace_id: String,
    /// Messages matching the filter in all.
    pub total: u64,
    /// Page size.
    pub limit: u32,
    /// Messages skipped.
    pub offset: u64,
    /// The page, by `sequence_index` (absent last), then creation.
    pub messages: Vec<MessageView>,
}

/// The answer to a publish.
#[derive(Debug, Object)]
pub struct PublishResponse {
    /// True.
    pub success: bool,
    /// The message's id: read the result at `/message/{message_id}`.
    pub message_id: Uuid,
    /// `pending` for a new message; the current status for a repeated `message_id`.
    pub status: String,
    /// The workspace.
    pub workspace_id: String,
    /// When it was first published.
    pub created_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum PublishResult {
    /// Stored and queued.
    #[oai(status = 201)]
    Created(Json<PublishResponse>),
    /// A message with this `message_id` already existed; nothing was created.
    #[oai(status = 200)]
    Existing(Json<PublishResponse>),
}

/// Token usage.
#[derive(Debug, Object)]
pub struct UsageDto {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

/// The provider's answer.
#[derive(Debug, Object)]
pub struct ResultDto {
    /// The answer's text.
    pub text: String,
    /// The answer parsed, when `response_format` was `json`.
    pub json: Option<serde_json::Value>,
    /// The model that answered.
    pub model: String,
    /// Token usage, when reported.
    pub usage: Option<UsageDto>,
}

impl From<MessageResult> for ResultDto {
    fn from(r: MessageResult) -> Self {
        Self {
            text: r.text,
            json: r.json,
            model: r.model,
            usage: r.usage.map(|u| UsageDto {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        }
    }
}

/// A message with its status and result (one response).
#[derive(Debug, Object)]
pub struct MessageDto {
    /// True.
    pub success: bool,
    /// The message.
    #[oai(flatten)]
    pub message: MessageView,
}

/// A message with its status and result.
#[derive(Debug, Object)]
pub struct MessageView {
    /// Its id.
    pub message_id: Uuid,
    /// Its workspace.
    pub workspace_id: String,
    /// `pending`, `processing`, `success` or `failed`.
    pub status: String,
    /// The prompt.
    pub prompt: String,
    /// The content.
    pub content: Option<String>,
    /// The system prompt.
    pub system_prompt: Option<String>,
    /// The model asked for.
    pub model: Option<String>,
    /// Your sequence index.
    pub sequence_index: Option<i64>,
    /// Your HTML tag.
    pub html_tag: Option<String>,
    /// `text` or `json`.
    pub response_format: String,
    /// The answer (on success; also the raw text when a JSON answer did not parse).
    pub result: Option<ResultDto>,
    /// Why it failed.
    pub error: Option<String>,
    /// Provider calls made (429s not counted).
    pub attempts: u32,
    /// The key used by the last call.
    pub key_id: Option<Uuid>,
    /// Published at.
    pub created_at: DateTime<Utc>,
    /// First taken by a worker at.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            message_id: m.id,
            workspace_id: m.workspace_id.to_string(),
            status: m.status.as_str().into(),
            prompt: m.request.prompt,
            content: m.request.content,
            system_prompt: m.request.system_prompt,
            model: m.request.model,
            sequence_index: m.request.sequence_index,
            html_tag: m.request.html_tag,
            response_format: m.request.response_format.as_str().into(),
            result: m.result.map(ResultDto::from),
            error: m.error,
            attempts: m.attempts,
            key_id: m.key_id,
            created_at: m.created_at,
            started_at: m.started_at,
            completed_at: m.completed_at,
        }
    }
}

pub struct MessagesApi(pub Option<Engine>);

impl MessagesApi {
    fn engine(&self) -> Result<&Engine, ApiError> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no engine".into()).into())
    }
}

#[OpenApi(tag = "ApiTags::Messages")]
impl MessagesApi {
    /// Publish a message: it is stored, then queued; read the result at `/message/{message_id}`.
    #[oai(path = "/message/publish", method = "post")]
    async fn publish(&self, body: Json<PublishRequest>) -> Result<PublishResult, ApiError> {
        let new = NewMessage::try_from(body.0)?;
        let published = self.engine()?.publish(new).await?;
        let m = published.message;
        let dto = Json(PublishResponse {
            success: true,
            message_id: m.id,
            status: m.status.as_str().into(),
            workspace_id: m.workspace_id.to_string(),
            created_at: m.created_at,
        });
        Ok(if published.created {
            PublishResult::Created(dto)
        } else {
            PublishResult::Existing(dto)
        })
    }

    /// A message's status, request fields and result.
    #[oai(path = "/message/:message_id", method = "get")]
    async fn get(&self, message_id: Path<Uuid>) -> Result<Json<MessageDto>, ApiError> {
        let m = self.engine()?.get_message(message_id.0).await?;
        Ok(Json(MessageDto {
            success: true,
            message: MessageView::from(m),
        }))
    }

    /// Publish up to 1000 messages to one workspace: all validated first, stored in one
    /// transaction, then queued; the ids come back in order.
    #[oai(path = "/message/publish/batch", method = "post")]
    async fn publish_batch(
        &self,
        body: Json<BatchPublishRequest>,
    ) -> Result<BatchPublishResult, ApiError> {
        let b = body.0;
        let ws = WorkspaceId::parse(b.workspace_id.as_str())?;
        let items = b
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                <(Option<Uuid>, MessageRequest)>::try_from(m).map_err(|e| match e {
                    Error::Validation(msg) => Error::Validation(format!("messages[{i}]: {msg}")),
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let published = self.engine()?.publish_batch(&ws, items).await?;
        Ok(BatchPublishResult::Created(Json(BatchPublishResponse {
            success: true,
            workspace_id: ws.to_string(),
            count: published.len() as u64,
            created: published.iter().filter(|p| p.created).count() as u64,
            message_ids: published.iter().map(|p| p.message.id).collect(),
        })))
    }

    /// A workspace's messages, by `sequence_index` then creation, paginated
    /// (`limit` 1 to 1000, default 100).
    #[oai(path = "/messages", method = "get")]
    async fn list(
        &self,
        /// The workspace.
        workspace_id: Query<String>,
        /// Only messages in this status (`pending`, `processing`, `success`, `failed`).
        status: Query<Option<String>>,
        /// Page size (1 to 1000, default 100).
        limit: Query<Option<i64>>,
        /// Messages to skip (default 0).
        offset: Query<Option<i64>>,
    ) -> Result<Json<MessageListResponse>, ApiError> {
        let ws = WorkspaceId::parse(&workspace_id.0)?;
        let status = status.0.as_deref().map(MessageStatus::parse).transpose()?;
        let limit = match limit.0 {
            None => 100,
            Some(l) if (1..=1000).contains(&l) => l as u32,
            Some(_) => {
                return Err(Error::Validation("limit must be between 1 and 1000".into()).into());
            }
        };
        let offset = match offset.0 {
            None => 0,
            Some(o) if o >= 0 => o as u64,
            Some(_) => return Err(Error::Validation("offset must be >= 0".into()).into()),
        };
        let page = self
            .engine()?
            .list_messages(&ws, status, limit, offset)
            .await?;
        Ok(Json(MessageListResponse {
            success: true,
            workspace_id: ws.to_string(),
            total: page.total,
            limit,
            offset,
            messages: page.messages.into_iter().map(MessageView::from).collect(),
        }))
    }
}
