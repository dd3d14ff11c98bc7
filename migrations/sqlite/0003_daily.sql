-- Rollups shaped like the questions auditors ask most: plays by slogan by day, plays by
-- display by day. A day is local to the deployment's zone; its fixed UTC offset (hours) is
-- part of the key, so a zone change never mixes two kinds of day. Kept in the same
-- transaction as the receipts; `rollup_daily_coverage` says for which offset the tables
-- hold all of history (backfilled from rollup_hourly the first time).
CREATE TABLE rollup_daily_slogan (
    day         INTEGER NOT NULL,
    utc_offset  INTEGER NOT NULL,
    slogan      INTEGER NOT NULL,
    feed        INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    plays       INTEGER NOT NULL,
    PRIMARY KEY (utc_offset, day, slogan, feed, status)
) WITHOUT ROWID;

CREATE TABLE rollup_daily_device (
    day         INTEGER NOT NULL,
    utc_offset  INTEGER NOT NULL,
    device      INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    plays       INTEGER NOT NULL,
    PRIMARY KEY (utc_offset, day, device, status)
) WITHOUT ROWID;

CREATE TABLE rollup_daily_coverage (
    utc_offset  INTEGER PRIMARY KEY
);
