//! Messages: one prompt to send to a provider, and what became of it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::WorkspaceId;
use crate::error::{Error, Result};

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Stored and queued, not yet taken by a worker.
    Pending,
    /// A worker is on it (waiting for a permit or for the provider).
    Processing,
    /// The provider answered; `result` is set.
    Success,
    /// It failed for good; `error` says why.
    Failed,
}

impl MessageStatus {
    /// Lower-case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored or requested status.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "processing" => Ok(Self::Processing),
            "success" => Ok(Self::Success),
            "failed" => Ok(Self::Failed),
            other => Err(Error::Validation(format!(
                "unknown status '{other}'; expected pending, processing, success or failed"
            ))),
        }
    }

    /// True once the message will never be processed again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }
}

/// What the caller wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// A JSON object; the stored result carries it parsed.
    Json,
}

impl ResponseFormat {
    /// Parses `"json"` / `"text"` (case-insensitive; `json_object` accepted as an alias).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Self::Text),
            "json" | "json_object" => Ok(Self::Json),
            other => Err(Error::Validation(format!(
                "response_format '{other}' is not supported; use \"json\" or \"text\""
            ))),
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The caller's request: what to send, plus metadata that is stored but never sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageRequest {
    /// The instruction (required, non-empty).
    pub prompt: String,
    /// Text the prompt works on; appended after a blank line.
    pub content: Option<String>,
    /// Sent as the system message.
    pub system_prompt: Option<String>,
    /// The model; defaults to the key's `config.model`.
    pub model: Option<String>,
    /// Caller metadata: position in the document (not sent).
    pub sequence_index: Option<i64>,
    /// Caller metadata: HTML tag the result goes into (not sent).
    pub html_tag: Option<String>,
    /// Text or JSON output.
    pub response_format: ResponseFormat,
}

impl MessageRequest {
    /// Longest accepted prompt + content, in bytes.
    pub const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;

    /// Validates the request.
    pub fn validate(self) -> Result<Self> {
        if self.prompt.trim().is_empty() {
            return Err(Error::Validation("prompt must not be empty".into()));
        }
        let len = self.prompt.len()
            + self.content.as_deref().map_or(0, str::len)
            + self.system_prompt.as_deref().map_or(0, str::len);
        if len > Self::MAX_TEXT_BYTES {
            return Err(Error::Validation(format!(
                "prompt, content and system_prompt together exceed {} bytes",
                Self::MAX_TEXT_BYTES
            )));
        }
        if let Some(m) = &self.model
            && m.trim().is_empty()
        {
            return Err(Error::Validation(
                "model must not be empty when given".into(),
            ));
        }
        Ok(self)
    }

    /// The one user message sent to the provider: `prompt + "\n\n" + content`, or just `prompt`.
    pub fn user_text(&self) -> String {
        match self.content.as_deref() {
            Some(c) if !c.is_empty() => format!("{}\n\n{}", self.prompt, c),
            _ => self.prompt.clone(),
        }
    }

    /// The prompt part of a token estimate: the UTF-8 length of all the text the provider
    /// receives (the system prompt, the prompt, and the blank line plus content when there is
    /// content) divided by 4, rounded up (about four bytes a token for English text).
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let content = self
            .content
            .as_deref()
            .filter(|c| !c.is_empty())
            .map_or(0, |c| c.len() + 2);
        let system = self.system_prompt.as_deref().map_or(0, str::len);
        let bytes = self.prompt.len() + content + system;
        u64::try_from(bytes).unwrap_or(u64::MAX).div_ceil(4)
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Client-chosen id (makes publishing idempotent); a fresh one otherwise.
    pub id: Option<Uuid>,
    /// Target workspace.
    pub workspace_id: WorkspaceId,
    /// The request.
    pub request: MessageRequest,
}

/// Token usage reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
}

/// What the provider answered.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageResult {
    /// The text of the answer (raw text even when JSON was asked for).
    pub text: String,
    /// The parsed JSON when `response_format` was `json` and it parsed.
    pub json: Option<serde_json::Value>,
    /// The model that answered.
    pub model: String,
    /// Token usage, when the provider reported it.
    pub usage: Option<Usage>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id.
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// What was asked.
    pub request: MessageRequest,
    /// Where it is.
    pub status: MessageStatus,
    /// The answer (success; or the raw text of an unparsable JSON answer).
    pub result: Option<MessageResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// Provider calls made for it (429s are not counted).
    pub attempts: u32,
    /// The key used by the last call.
    pub key_id: Option<Uuid>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
}

impl Message {
    /// A fresh pending message.
    pub fn new(new: NewMessage, now: DateTime<Utc>) -> Self {
        Self {
            id: new.id.unwrap_or_else(Uuid::new_v4),
            workspace_id: new.workspace_id,
            request: new.request,
            status: MessageStatus::Pending,
            result: None,
            error: None,
            attempts: 0,
            key_id: None,
            created_at: now,
            started_at: None,
            completed_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_estimate_is_every_byte_sent_over_four_rounded_up() {
        let mut r = MessageRequest {
            prompt: "abcd".into(),
            ..Default::default()
        };
        assert_eq!(r.estimated_prompt_tokens(), 1);
        r.prompt = "abcde".into();
        assert_eq!(r.estimated_prompt_tokens(), 2);
        // An empty content adds nothing; a content adds itself and the blank line before it.
        r.content = Some(String::new());
        assert_eq!(r.estimated_prompt_tokens(), 2);
        r.content = Some("x".into());
        assert_eq!(r.user_text().len(), 8);
        assert_eq!(r.estimated_prompt_tokens(), 2);
        r.system_prompt = Some("s".into());
        assert_eq!(r.estimated_prompt_tokens(), 3);
        // Bytes, not characters: "é" is two bytes.
        let accents = MessageRequest {
            prompt: "éééé".into(),
            ..Default::default()
        };
        assert_eq!(accents.estimated_prompt_tokens(), 2);
    }

    #[test]
    fn user_text_joins_prompt_and_content_with_a_blank_line() {
        let mut r = MessageRequest {
            prompt: "Translate".into(),
            content: Some("Bonjour".into()),
            ..Default::default()
        };
        assert_eq!(r.user_text(), "Translate\n\nBonjour");
        r.content = Some(String::new());
        assert_eq!(r.user_text(), "Translate");
        r.content = None;
        assert_eq!(r.user_text(), "Translate");
    }

    #[test]
    fn empty_prompt_is_rejected() {
        let r = MessageRequest {
            prompt: "  ".into(),
            ..Default::default()
        };
        assert!(r.validate().is_err());
    }

    #[test]
    fn status_round_trips() {
        for s in [
            MessageStatus::Pending,
            MessageStatus::Processing,
            MessageStatus::Success,
            MessageStatus::Failed,
        ] {
            assert_eq!(MessageStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(MessageStatus::parse("done").is_err());
    }
}
