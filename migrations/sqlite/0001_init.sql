-- Integer keys everywhere: receipts are the heavy table (one row per display per play).
CREATE TABLE devices (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    class   TEXT NOT NULL
);

CREATE TABLE feeds (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE
);

-- Which feeds a display belonged to and when: a receipt counts only for a play that was sent
-- to that display.
CREATE TABLE memberships (
    device  INTEGER NOT NULL REFERENCES devices(id),
    feed    INTEGER NOT NULL REFERENCES feeds(id),
    since   INTEGER NOT NULL,        -- ms since the epoch
    until   INTEGER,                 -- NULL: still a member
    PRIMARY KEY (device, feed, since)
) WITHOUT ROWID;

CREATE TABLE slogans (
    id      INTEGER PRIMARY KEY,
    adset   TEXT NOT NULL,
    rev     INTEGER NOT NULL,
    slogan  TEXT NOT NULL,
    UNIQUE (adset, rev, slogan)
);

-- One row per publish: on a feed (feed set) or direct to one display (device set).
CREATE TABLE plays (
    id          INTEGER PRIMARY KEY,
    play_id     TEXT NOT NULL UNIQUE,
    feed        INTEGER REFERENCES feeds(id),
    device      INTEGER REFERENCES devices(id),
    slogan      INTEGER NOT NULL REFERENCES slogans(id),
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    members     INTEGER NOT NULL     -- displays the play was sent to
);
CREATE INDEX plays_issued ON plays (issued_at);

CREATE TABLE receipts (
    device      INTEGER NOT NULL,
    play        INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,    -- ms since the epoch
    duration_ms INTEGER NOT NULL,
    status      INTEGER NOT NULL,    -- 0 played, 1 skipped, 2 expired, 3 failed
    PRIMARY KEY (device, play)
) WITHOUT ROWID;

-- Kept in the same transaction as receipts so that audits never scan raw rows for counts.
CREATE TABLE rollup_hourly (
    hour    INTEGER NOT NULL,        -- hours since the epoch (UTC)
    device  INTEGER NOT NULL,
    slogan  INTEGER NOT NULL,
    feed    INTEGER NOT NULL,        -- 0: a direct play
    status  INTEGER NOT NULL,
    plays   INTEGER NOT NULL,
    PRIMARY KEY (hour, device, slogan, feed, status)
) WITHOUT ROWID;

CREATE TABLE rejects (
    day     INTEGER NOT NULL,        -- days since the epoch (UTC)
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (day, reason)
) WITHOUT ROWID;

CREATE TABLE presence (
    device      INTEGER NOT NULL,
    online_from INTEGER NOT NULL,
    online_until INTEGER,            -- NULL: online now
    PRIMARY KEY (device, online_from)
) WITHOUT ROWID;

CREATE TABLE feed_state (
    feed        TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,       -- the rotation cursor, JSON
    last_issued INTEGER NOT NULL
);
