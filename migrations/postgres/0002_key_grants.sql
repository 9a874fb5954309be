-- Requests sent on each key (unix microseconds), recorded before they are sent, so a restarted
-- engine restores every key's sliding window instead of starting it empty.
CREATE TABLE key_grants (
    key_id        uuid NOT NULL REFERENCES provider_keys (key_id) ON DELETE CASCADE,
    granted_at_us bigint NOT NULL
);
CREATE INDEX key_grants_key_time ON key_grants (key_id, granted_at_us);
CREATE INDEX key_grants_time ON key_grants (granted_at_us);

-- Listing a workspace's messages in document order.
CREATE INDEX messages_workspace_sequence ON messages (workspace_id, sequence_index, created_at);
