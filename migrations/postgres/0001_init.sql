-- Initial schema of the server (PostgreSQL) backend: the SQLite schema with native types
-- (uuid ids, timestamptz, jsonb, boolean, bigint). Keep the two in step.
CREATE TABLE workspaces (
    workspace_id text PRIMARY KEY,
    worker_count bigint NOT NULL DEFAULT 1 CHECK (worker_count >= 0),
    created_at   timestamptz NOT NULL
);

CREATE TABLE provider_keys (
    key_id            uuid PRIMARY KEY,
    workspace_id      text NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    provider          text NOT NULL,
    api_key           text NOT NULL,
    rate_limit        bigint NOT NULL CHECK (rate_limit >= 1),
    rate_limit_period bigint NOT NULL CHECK (rate_limit_period >= 1),
    config            jsonb NOT NULL,
    healthy           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX provider_keys_workspace ON provider_keys (workspace_id);

CREATE TABLE messages (
    message_id      uuid PRIMARY KEY,
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    status          text NOT NULL
                    CHECK (status IN ('pending', 'processing', 'success', 'failed')),
    prompt          text NOT NULL,
    content         text,
    system_prompt   text,
    model           text,
    sequence_index  bigint,
    html_tag        text,
    response_format text NOT NULL,
    result          jsonb,
    error           text,
    attempts        bigint NOT NULL DEFAULT 0,
    key_id          uuid,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz
);
CREATE INDEX messages_workspace_status ON messages (workspace_id, status);
CREATE INDEX messages_unfinished ON messages (created_at) WHERE status IN ('pending', 'processing');
