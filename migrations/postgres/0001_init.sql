-- PostgreSQL schema: the same tables as migrations/sqlite/0001_init.sql, with BIGINT keys and
-- times (ms since the epoch unless said otherwise) and `receipts` partitioned by day.
--
-- Receipts: partitioning and "at most once per (device, play)"
-- ------------------------------------------------------------
-- A unique index on a partitioned table must contain the partition key. Partitioning by the
-- day of `started_at` would make the key (device, play, started_at): two copies of one receipt
-- that disagree on started_at (a display that re-sends after a clock step, a hand-edited
-- replay) would both be stored and both counted. A separate unpartitioned dedupe table
-- `receipt_keys (device, play)` fixes that but writes every receipt twice and keeps an index
-- that never shrinks (480 million keys a day at full scale), defeating retention by
-- dropping partitions.
--
-- Chosen: partition by `play_day`, the UTC day (days since the epoch) of the PLAY's
-- `issued_at`. It is a function of `play`, so the key (device, play, play_day) is unique
-- exactly when (device, play) is: dedupe stays exact, in one index, inside the partition.
-- The store fills play_day itself in the INSERT (a join on plays' primary key, plays being
-- few and hot), so callers pass nothing new. Further gains: the day comes from our clock,
-- not a display's, so a display with a wrong clock cannot push rows into odd partitions; a
-- play's receipts arrive within its expiry (minutes), so play_day is started_at's day
-- except around midnight, which is precise enough for retention (drop whole days).
-- Cost: audits that read raw receipts filter on started_at, which does not prune
-- partitions; the BRIN index below (receipts arrive in time order) keeps such scans to the
-- matching blocks for the price of a few pages per partition. Counts come from
-- rollup_hourly anyway, which is kept for good.
--
-- Daily partitions are named receipts_YYYYMMDD and created ahead of time by
-- PgStore::ensure_partitions (from migrate() and hourly from commit_batch); the DEFAULT
-- partition takes any other day so an insert never fails for want of a partition
-- (ensure_partitions moves such rows out when it creates their day's partition).

CREATE TABLE devices (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    class   TEXT NOT NULL
);

CREATE TABLE feeds (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE
);

-- Which feeds a display belonged to and when: a receipt counts only for a play that was sent
-- to that display.
CREATE TABLE memberships (
    device  BIGINT NOT NULL REFERENCES devices(id),
    feed    BIGINT NOT NULL REFERENCES feeds(id),
    since   BIGINT NOT NULL,
    until   BIGINT,                  -- NULL: still a member
    PRIMARY KEY (device, feed, since)
);

CREATE TABLE slogans (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    adset   TEXT NOT NULL,
    rev     BIGINT NOT NULL,
    slogan  TEXT NOT NULL,
    UNIQUE (adset, rev, slogan)
);

-- One row per publish: on a feed (feed set) or direct to one display (device set).
CREATE TABLE plays (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    play_id     TEXT NOT NULL UNIQUE,
    feed        BIGINT REFERENCES feeds(id),
    device      BIGINT REFERENCES devices(id),
    slogan      BIGINT NOT NULL REFERENCES slogans(id),
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    members     BIGINT NOT NULL      -- displays the play was sent to
);
CREATE INDEX plays_issued ON plays (issued_at);

-- Columns ordered widest first so rows pack without padding. No foreign keys: the daemon
-- checks device and play before a receipt gets here, and the checks would cost per row.
CREATE TABLE receipts (
    device      BIGINT NOT NULL,
    play        BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    play_day    INTEGER NOT NULL,    -- UTC day (days since the epoch) of the play's issued_at
    status      SMALLINT NOT NULL,   -- 0 played, 1 skipped, 2 expired, 3 failed
    PRIMARY KEY (device, play, play_day)
) PARTITION BY RANGE (play_day);
CREATE INDEX receipts_started ON receipts USING brin (started_at);
CREATE TABLE receipts_default PARTITION OF receipts DEFAULT;

-- Kept in the same transaction as receipts so that audits never scan raw rows for counts.
CREATE TABLE rollup_hourly (
    hour    BIGINT NOT NULL,         -- hours since the epoch (UTC)
    device  BIGINT NOT NULL,
    slogan  BIGINT NOT NULL,
    feed    BIGINT NOT NULL,         -- 0: a direct play
    status  SMALLINT NOT NULL,
    plays   BIGINT NOT NULL,
    PRIMARY KEY (hour, device, slogan, feed, status)
);

CREATE TABLE rejects (
    day     BIGINT NOT NULL,         -- days since the epoch (UTC)
    reason  TEXT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (day, reason)
);

CREATE TABLE presence (
    device       BIGINT NOT NULL,
    online_from  BIGINT NOT NULL,
    online_until BIGINT,             -- NULL: online now
    PRIMARY KEY (device, online_from)
);
-- At most one open interval per display, even with concurrent writers.
CREATE UNIQUE INDEX presence_open ON presence (device) WHERE online_until IS NULL;

CREATE TABLE feed_state (
    feed        TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,       -- the rotation cursor, JSON
    last_issued BIGINT NOT NULL
);
