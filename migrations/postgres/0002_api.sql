-- PostgreSQL equivalent of migrations/sqlite/0002_api.sql: API tokens and ad-set revisions.
-- Times are BIGINT ms since the epoch, ids BIGINT identity columns, as in 0001_init.sql.

-- Tokens: only a hash of each token is kept.
CREATE TABLE tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- Every revision of every ad set, from uploads and from schedules/ alike. Revisions are
-- numbered 1, 2, ... per ad set by the store, under a per-ad-set advisory lock.
CREATE TABLE adset_revisions (
    adset       TEXT NOT NULL,
    rev         BIGINT NOT NULL,
    format      TEXT NOT NULL,          -- toml | json
    body        TEXT NOT NULL,
    origin      TEXT NOT NULL,          -- upload | file
    uploaded_by TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    approved_by TEXT,
    approved_at BIGINT,
    PRIMARY KEY (adset, rev)
);

CREATE TABLE adset_retired (
    adset       TEXT PRIMARY KEY,
    retired_by  TEXT NOT NULL,
    retired_at  BIGINT NOT NULL
);
