-- Secrets encrypted at rest (AES-256-GCM, see store/keyring.py): the value as nonce || ciphertext ||
-- tag, bound to its row as associated data, and the version of the key that sealed it.
-- workspace_env's plain-text values are moved in here, encrypted, by the worker at its next start
-- (store/secrets.py: move_plain_env), which then drops that table: SQL alone has no key.
CREATE TABLE global_secrets (
    key                 text PRIMARY KEY,
    encrypted_value     bytea NOT NULL,
    encryption_version  integer NOT NULL CHECK (encryption_version > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspace_secrets (
    workspace_id        uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key                 text NOT NULL,
    encrypted_value     bytea NOT NULL,
    encryption_version  integer NOT NULL CHECK (encryption_version > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, key)
);
