-- Initial schema of the embedded (SQLite) backend.
CREATE TABLE workspaces (
    workspace_id TEXT PRIMARY KEY NOT NULL,
    worker_count INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL
);

CREATE TABLE provider_keys (
    key_id            TEXT PRIMARY KEY NOT NULL,
    workspace_id      TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    provider          TEXT NOT NULL,
    api_key           TEXT NOT NULL,
    rate_limit        INTEGER NOT NULL,
    rate_limit_period INTEGER NOT NULL,
    config            TEXT NOT NULL,
    healthy           INTEGER NOT NULL DEFAULT 1,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX provider_keys_workspace ON provider_keys (workspace_id);

CREATE TABLE messages (
    message_id      TEXT PRIMARY KEY NOT NULL,
    workspace_id    TEXT NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    status          TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    content         TEXT,
    system_prompt   TEXT,
    model           TEXT,
    sequence_index  INTEGER,
    html_tag        TEXT,
    response_format TEXT NOT NULL,
    result          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    key_id          TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    completed_at    TEXT
);
CREATE INDEX messages_workspace_status ON messages (workspace_id, status);
CREATE INDEX messages_unfinished ON messages (created_at) WHERE status IN ('pending', 'processing');
