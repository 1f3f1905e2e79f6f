-- The agent's side: delivery mode, first-register token bootstrap, the activity log's read paths
-- and chat files.

-- 'poll': the agent has no inbound URL and reads its inbox (a2a_receive rows) instead.
ALTER TABLE workspaces ADD COLUMN delivery_mode text NOT NULL DEFAULT 'push'
    CHECK (delivery_mode IN ('push', 'poll'));
-- Set when created with token_delivery=register: until then, the first register without a bearer
-- mints the workspace's token. Cleared by that claim.
ALTER TABLE workspaces ADD COLUMN register_claim_until timestamptz;

-- Clients page by id (`since_id`, oldest first) and by time (newest first), filtered by type or by
-- peer: each of those reads is an index range, never a scan of the workspace's rows.
CREATE INDEX activity_logs_ws_id_idx ON activity_logs (workspace_id, id);
CREATE INDEX activity_logs_ws_type_idx ON activity_logs (workspace_id, activity_type, created_at DESC, id DESC);
CREATE INDEX activity_logs_ws_source_idx ON activity_logs (workspace_id, source_id, created_at DESC, id DESC);
CREATE INDEX activity_logs_ws_target_idx ON activity_logs (workspace_id, target_id, created_at DESC, id DESC);

-- Files a user or an agent attached to a chat; the bytes live in the object store under `key`.
CREATE TABLE chat_files (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key           text NOT NULL UNIQUE,
    name          text NOT NULL,
    mime_type     text NOT NULL,
    size          bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_files_ws_idx ON chat_files (workspace_id);
