-- Rollups no bigger than the questions they answer. `rollup_hourly` was keyed by display,
-- hour, slogan, feed and status; a display's hour never repeats a slogan at a city's cadence,
-- so it held one row per receipt: a second copy of the receipts, written in every receipt
-- transaction. It gives way to:
--   rollup_hour          plays per UTC hour by class, slogan, feed and status (no display);
--   rollup_daily_slogan  the same per local day (class added to its key);
--                        both in four cuts (`cut`, first in the key, so that a question
--                        reads only its own): 0 by class, slogan and feed; 1 by class and
--                        slogan (feed -1); 2 by class and feed (slogan -1); 3 by class
--                        alone (both -1). A question about classes reads a few rows an
--                        hour instead of every slogan of every feed.
--   rollup_daily_device  plays per local day by display and status, with the day's 24 local
--                        hours in h00..h23, so display-by-hour questions read one row per
--                        display-day.
-- What a display played (which slogan, which feed) is read from its receipts by key range.
-- `class` is the display's class when the receipt was stored; a change of class moves the
-- display's counts (PgStore/SqliteStore::sync_inventory), so audits by class follow the
-- display's class now, as they did.
-- Every table is rebuilt from rollup_hourly for each zone offset already covered, so a
-- database moves forward with the same counts, receipts pruned by retention included.

CREATE TABLE rollup_hour (
    cut     INTEGER NOT NULL,
    hour    INTEGER NOT NULL,         -- hours since the epoch (UTC)
    class   TEXT NOT NULL,
    slogan  INTEGER NOT NULL,
    feed    INTEGER NOT NULL,         -- 0: a direct play
    status  INTEGER NOT NULL,
    plays   INTEGER NOT NULL,
    PRIMARY KEY (cut, hour, class, slogan, feed, status)
) WITHOUT ROWID;
INSERT INTO rollup_hour (cut, hour, class, slogan, feed, status, plays)
SELECT c.cut, h.hour, d.class,
       CASE WHEN c.cut IN (0, 1) THEN h.slogan ELSE -1 END,
       CASE WHEN c.cut IN (0, 2) THEN h.feed ELSE -1 END,
       h.status, SUM(h.plays)
FROM rollup_hourly h JOIN devices d ON d.id = h.device
CROSS JOIN (SELECT 0 AS cut UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) c
GROUP BY c.cut, h.hour, d.class,
       CASE WHEN c.cut IN (0, 1) THEN h.slogan ELSE -1 END,
       CASE WHEN c.cut IN (0, 2) THEN h.feed ELSE -1 END,
       h.status;

DROP TABLE rollup_daily_slogan;
CREATE TABLE rollup_daily_slogan (
    cut         INTEGER NOT NULL,
    day         INTEGER NOT NULL,     -- local days since the epoch
    utc_offset  INTEGER NOT NULL,
    class       TEXT NOT NULL,
    slogan      INTEGER NOT NULL,
    feed        INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    plays       INTEGER NOT NULL,
    PRIMARY KEY (utc_offset, cut, day, class, slogan, feed, status)
) WITHOUT ROWID;
INSERT INTO rollup_daily_slogan (cut, day, utc_offset, class, slogan, feed, status, plays)
SELECT h.cut, (h.hour + c.utc_offset) / 24, c.utc_offset, h.class, h.slogan, h.feed, h.status, SUM(h.plays)
FROM rollup_hour h CROSS JOIN rollup_daily_coverage c
GROUP BY h.cut, (h.hour + c.utc_offset) / 24, c.utc_offset, h.class, h.slogan, h.feed, h.status;

DROP TABLE rollup_daily_device;
CREATE TABLE rollup_daily_device (
    day         INTEGER NOT NULL,
    utc_offset  INTEGER NOT NULL,
    device      INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    plays       INTEGER NOT NULL,     -- the day's total: h00 + ... + h23
    h00 INTEGER NOT NULL DEFAULT 0,
    h01 INTEGER NOT NULL DEFAULT 0,
    h02 INTEGER NOT NULL DEFAULT 0,
    h03 INTEGER NOT NULL DEFAULT 0,
    h04 INTEGER NOT NULL DEFAULT 0,
    h05 INTEGER NOT NULL DEFAULT 0,
    h06 INTEGER NOT NULL DEFAULT 0,
    h07 INTEGER NOT NULL DEFAULT 0,
    h08 INTEGER NOT NULL DEFAULT 0,
    h09 INTEGER NOT NULL DEFAULT 0,
    h10 INTEGER NOT NULL DEFAULT 0,
    h11 INTEGER NOT NULL DEFAULT 0,
    h12 INTEGER NOT NULL DEFAULT 0,
    h13 INTEGER NOT NULL DEFAULT 0,
    h14 INTEGER NOT NULL DEFAULT 0,
    h15 INTEGER NOT NULL DEFAULT 0,
    h16 INTEGER NOT NULL DEFAULT 0,
    h17 INTEGER NOT NULL DEFAULT 0,
    h18 INTEGER NOT NULL DEFAULT 0,
    h19 INTEGER NOT NULL DEFAULT 0,
    h20 INTEGER NOT NULL DEFAULT 0,
    h21 INTEGER NOT NULL DEFAULT 0,
    h22 INTEGER NOT NULL DEFAULT 0,
    h23 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (utc_offset, day, device, status)
) WITHOUT ROWID;
INSERT INTO rollup_daily_device (day, utc_offset, device, status, plays, h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, h10, h11, h12, h13, h14, h15, h16, h17, h18, h19, h20, h21, h22, h23)
SELECT (h.hour + c.utc_offset) / 24, c.utc_offset, h.device, h.status, SUM(h.plays),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 0 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 1 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 2 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 3 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 4 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 5 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 6 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 7 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 8 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 9 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 10 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 11 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 12 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 13 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 14 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 15 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 16 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 17 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 18 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 19 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 20 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 21 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 22 THEN h.plays ELSE 0 END),
    SUM(CASE WHEN (h.hour + c.utc_offset) % 24 = 23 THEN h.plays ELSE 0 END)
FROM rollup_hourly h CROSS JOIN rollup_daily_coverage c
GROUP BY (h.hour + c.utc_offset) / 24, c.utc_offset, h.device, h.status;

DROP TABLE rollup_hourly;
