-- Foundation schema. Status values mirror domain.status.WorkspaceStatus (a test enforces it).
CREATE TYPE workspace_status AS ENUM (
    'provisioning', 'online', 'offline', 'degraded', 'failed',
    'removed', 'paused', 'hibernating', 'hibernated', 'awaiting_agent'
);

CREATE TABLE workspaces (
    id                      uuid PRIMARY KEY,
    name                    text NOT NULL,
    role                    text,
    tier                    integer NOT NULL DEFAULT 2,
    runtime                 text NOT NULL,
    backend                 text NOT NULL,
    template                text,
    model                   text,
    parent_id               uuid REFERENCES workspaces (id),
    status                  workspace_status NOT NULL,
    url                     text,
    agent_card              jsonb,
    instance_id             text,
    provision_deadline_at   timestamptz,
    provision_timeout_secs  integer,
    registered_at           timestamptz,
    last_heartbeat_at       timestamptz,
    last_error_rate         double precision NOT NULL DEFAULT 0,
    last_sample_error       text,
    active_tasks            integer NOT NULL DEFAULT 0,
    uptime_seconds          bigint NOT NULL DEFAULT 0,
    current_task            text,
    runtime_state           text NOT NULL DEFAULT '',
    capabilities            jsonb NOT NULL DEFAULT '{}'::jsonb,
    idle_timeout_seconds    integer,
    max_concurrent_tasks    integer NOT NULL DEFAULT 1,
    budget_limit            bigint,
    monthly_spend           bigint NOT NULL DEFAULT 0,
    platform_inbound_secret text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    removed_at              timestamptz
);
CREATE INDEX workspaces_status_idx ON workspaces (status);
CREATE INDEX workspaces_parent_idx ON workspaces (parent_id);

CREATE TABLE workspace_auth_tokens (
    id            bigserial PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash    text NOT NULL UNIQUE,   -- sha256 hex of the token; the token itself is never stored
    prefix        char(8) NOT NULL,       -- first 8 characters, for operators to tell tokens apart
    kind          text NOT NULL DEFAULT 'api',  -- 'api' (returned at create) | 'instance' (minted at start)
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX workspace_auth_tokens_ws_idx ON workspace_auth_tokens (workspace_id);

-- Values are write-only through the API: never returned after create.
CREATE TABLE workspace_env (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          text NOT NULL,
    value         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE structure_events (
    id            bigserial PRIMARY KEY,
    event_type    text NOT NULL,
    workspace_id  uuid,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Set by workflow transitions so an activity retry never writes the same event twice.
    dedupe_key    text UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX structure_events_ws_idx ON structure_events (workspace_id, id);
