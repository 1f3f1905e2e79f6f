-- Agent-to-agent traffic: the activity log, the busy queue and delegations.

-- One row per thing a workspace did or had done to it. Bodies are bounded and redacted before they
-- are written; a repeated idempotency key is one row.
CREATE TABLE activity_logs (
    id              bigserial PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    activity_type   text NOT NULL,
    source_id       uuid,
    target_id       uuid,
    method          text,
    summary         text,
    request_body    jsonb,
    response_body   jsonb,
    duration_ms     integer,
    status          text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error', 'timeout')),
    error_detail    text,
    tool_trace      jsonb,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_logs_ws_idx ON activity_logs (workspace_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX activity_logs_idem_idx ON activity_logs (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Messages for a busy agent, drained by its workflow when a heartbeat shows spare capacity.
CREATE TABLE a2a_queue (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    caller_id       uuid,
    priority        integer NOT NULL DEFAULT 50,
    method          text NOT NULL,
    body            jsonb NOT NULL,
    idempotency_key text,
    delegation_id   uuid,
    attempts        integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'dispatched', 'completed', 'dropped', 'failed')),
    claimed_by      text,
    expires_at      timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One live entry per (target, caller, message): a message that failed or was dropped may be sent
-- again, and another caller's message with the same id is its own.
CREATE UNIQUE INDEX a2a_queue_idem_idx
    ON a2a_queue (workspace_id, (COALESCE(caller_id::text, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched');
CREATE INDEX a2a_queue_ready_idx ON a2a_queue (workspace_id, priority DESC, created_at, id)
    WHERE status = 'queued';

-- A task one workspace gave another. Dispatched and awaited by its own workflow (delegation-<id>);
-- rows a runtime records for delegations it made itself have no workflow.
CREATE TABLE delegations (
    id              uuid PRIMARY KEY,
    source_id       uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    target_id       uuid NOT NULL,
    task            text NOT NULL,
    status          text NOT NULL,
    summary         text,
    response        jsonb,
    error           text,
    idempotency_key text,
    queue_id        uuid,
    self_reported   boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX delegations_source_idx ON delegations (source_id, created_at DESC);
CREATE INDEX delegations_target_idx ON delegations (target_id, created_at DESC);
CREATE UNIQUE INDEX delegations_idem_idx ON delegations (source_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
