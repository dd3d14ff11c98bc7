-- Rollups shaped like the questions auditors ask most: plays by slogan by day, plays by
-- display by day. A day is local to the deployment's zone; its fixed UTC offset (hours) is
-- part of the key, so a zone change never mixes two kinds of day. Kept in the same
-- transaction as the receipts; `rollup_daily_coverage` says for which offset the tables
-- hold all of history (backfilled from rollup_hourly the first time).
CREATE TABLE rollup_daily_slogan (
    day         BIGINT NOT NULL,
    utc_offset  BIGINT NOT NULL,
    slogan      BIGINT NOT NULL,
    feed        BIGINT NOT NULL,
    status      BIGINT NOT NULL,
    plays       BIGINT NOT NULL,
    PRIMARY KEY (utc_offset, day, slogan, feed, status)
);

CREATE TABLE rollup_daily_device (
    day         BIGINT NOT NULL,
    utc_offset  BIGINT NOT NULL,
    device      BIGINT NOT NULL,
    status      BIGINT NOT NULL,
    plays       BIGINT NOT NULL,
    PRIMARY KEY (utc_offset, day, device, status)
);

CREATE TABLE rollup_daily_coverage (
    utc_offset  BIGINT PRIMARY KEY
);
