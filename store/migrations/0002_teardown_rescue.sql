-- Delete/pause/hibernate/rescue: teardown progress, idleness, rescue bundles.
ALTER TABLE workspaces
    ADD COLUMN teardown jsonb,                       -- {instance_stopped, volumes_removed, leak_suspect, attempts, last_error, complete}
    ADD COLUMN hibernation_idle_minutes integer NOT NULL DEFAULT 0,
    ADD COLUMN last_active_at timestamptz;           -- last beat with active_tasks > 0 (or register)

CREATE TABLE rescue_bundles (
    id            bigserial PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    generation    integer NOT NULL,
    reason        text NOT NULL,                     -- provision_timeout | bootstrap_watcher
    sections      jsonb NOT NULL,                    -- every value already redacted
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, generation, reason)
);
