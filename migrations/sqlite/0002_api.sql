-- Tokens: only a hash of each token is kept.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- Every revision of every ad set, from uploads and from schedules/ alike.
CREATE TABLE adset_revisions (
    adset       TEXT NOT NULL,
    rev         INTEGER NOT NULL,
    format      TEXT NOT NULL,          -- toml | json
    body        TEXT NOT NULL,
    origin      TEXT NOT NULL,          -- upload | file
    uploaded_by TEXT NOT NULL,
    uploaded_at INTEGER NOT NULL,
    approved_by TEXT,
    approved_at INTEGER,
    PRIMARY KEY (adset, rev)
);

CREATE TABLE adset_retired (
    adset       TEXT PRIMARY KEY,
    retired_by  TEXT NOT NULL,
    retired_at  INTEGER NOT NULL
);
