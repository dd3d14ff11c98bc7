-- Packed receipts: closed days in one row per (day, display) instead of one row per receipt.
--
-- A plain `receipts` row costs about 100 bytes with its key (24-byte tuple header, 38 bytes
-- of columns with alignment, a (device, play, play_day) B-tree entry). Once a day is closed
-- (its plays expired long ago, see PgStore::compact_receipts) nothing updates its receipts,
-- so they are moved into one row per display and day holding parallel arrays: the tuple
-- header, the device and the day are paid once per display-day instead of once per receipt,
-- and the per-receipt cost is the array elements (8 + 4 + 4 bytes). Rows past about 2 kB
-- (dense days) are also compressed by TOAST.
--
-- Element i of the three arrays is one receipt: play key; started_at as ms from the start
-- of play_day (UTC); duration_ms * 8 + status (a status is 0-3, a duration minutes at
-- most: one array header less per row, which counts when a display has few receipts a
-- day). Receipts whose start or duration do not fit (a start more than 24 days from its
-- play's day, a duration of 3 days or more, a status past 7) stay in `receipts` (readers
-- see both, `receipts_all`).
--
-- Dedupe stays exact: `receipts_packed_days` lists the packed days; a receipt for such a day
-- is checked against the packed row of its (device, day) before it may go into `receipts`,
-- under a per-day advisory lock that compaction takes exclusively (see commit_batch).
-- A late receipt that passes stays in its raw day partition until the next compaction
-- appends it to the packed row.
CREATE TABLE receipts_packed (
    device      BIGINT NOT NULL,
    play_day    INTEGER NOT NULL,
    min_start   BIGINT NOT NULL,     -- bounds of started_at over the row, for time-range readers
    max_start   BIGINT NOT NULL,
    plays       BIGINT[] NOT NULL,
    starts      INTEGER[] NOT NULL,  -- started_at - play_day * 86400000
    outcomes    INTEGER[] NOT NULL,  -- duration_ms * 8 + status
    -- The dedupe probe (device, day); max_start rides along so that the newest receipt of
    -- a display (last_receipts) is found from the index alone.
    PRIMARY KEY (device, play_day) INCLUDE (max_start)
);
-- Rows are written day by day, so block ranges summarise days and start times well: day
-- ranges (retention, receipts of plays) and time ranges (compliance, raw audits) skip
-- most of the table for a few pages of index.
CREATE INDEX receipts_packed_days_brin ON receipts_packed USING brin (play_day);
CREATE INDEX receipts_packed_starts ON receipts_packed USING brin (min_start, max_start);

CREATE TABLE receipts_packed_days (
    day         INTEGER PRIMARY KEY
);

-- Every receipt, raw or packed, in the columns of `receipts`. A filter on play_day reaches
-- both branches (partition pruning in `receipts`, the BRIN index in `receipts_packed`).
CREATE VIEW receipts_all AS
    SELECT device, play, started_at, duration_ms, play_day, status FROM receipts
    UNION ALL
    SELECT k.device, u.play, k.play_day::bigint * 86400000 + u.start_ms,
           (u.outcome >> 3)::bigint, k.play_day, (u.outcome & 7)::smallint
    FROM receipts_packed k
    CROSS JOIN LATERAL unnest(k.plays, k.starts, k.outcomes) AS u(play, start_ms, outcome);
