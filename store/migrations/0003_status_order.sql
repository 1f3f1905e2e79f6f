-- Status writes carry the workflow's transition sequence: the store refuses one that is not newer than
-- the row's, so concurrent writers inside one workflow can never leave the row behind the workflow.
-- `generation` is the workflow's current instance generation: a launch of an older one stops itself.
ALTER TABLE workspaces
    ADD COLUMN status_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN generation integer NOT NULL DEFAULT 0;
