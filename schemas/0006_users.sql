-- Users of the HTTP side (people and machine clients), their API tokens and browser sessions.
-- Secrets are stored hashed: passwords with argon2id (PHC string), tokens and session ids with
-- SHA-256 (they are random 256-bit values, so a fast hash is enough).
CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role            text NOT NULL CHECK (role IN ('radiologist', 'admin', 'service')),
    password_hash   text,
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id              bigserial PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users,
    token_sha256    text NOT NULL UNIQUE,
    label           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

CREATE TABLE sessions (
    session_sha256  text PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
