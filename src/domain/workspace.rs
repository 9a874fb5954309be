//! Workspaces: a tenant holding provider keys and workers.

use chrono::{DateTime, Utc};

use super::NewProviderKey;
use crate::error::{Error, Result};

/// A workspace identifier: 1 to 128 characters from `[A-Za-z0-9._:-]` (UUIDs in practice).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// Maximum length of a workspace id.
    pub const MAX_LEN: usize = 128;

    /// Validates a workspace id.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(Error::Validation(format!(
                "workspace_id must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(Error::Validation(format!(
                "workspace_id may only contain A-Z, a-z, 0-9, '.', '_', ':' and '-' (found {c:?})"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Its id.
    pub id: WorkspaceId,
    /// The target number of workers (stored, restored on restart).
    pub worker_count: u32,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// A workspace registration: the id and its initial provider keys.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    /// The id chosen by the client.
    pub id: WorkspaceId,
    /// Keys to create with it (may be empty).
    pub providers: Vec<NewProviderKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuids_and_dotted_names() {
        assert!(WorkspaceId::parse("0b7e1f3c-6a47-4d8a-9d33-1b2c3d4e5f60").is_ok());
        assert!(WorkspaceId::parse("team.alpha:prod_1").is_ok());
        assert!(WorkspaceId::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_odd_characters() {
        assert!(WorkspaceId::parse("").is_err());
        assert!(WorkspaceId::parse(&"a".repeat(129)).is_err());
        assert!(WorkspaceId::parse("a b").is_err());
        assert!(WorkspaceId::parse("a/b").is_err());
        assert!(WorkspaceId::parse("é").is_err());
    }
}
