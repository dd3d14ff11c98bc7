-- Closed days' `played` start times, one row per display and UTC day, for compliance: a
-- week's report read every start of the week as a receipt row (about 30 bytes and a
-- B-tree step each); a timeline holds them in about 3 bytes each (src/store/timeline.rs).
-- `played_days_done` lists the days whose timelines are complete: compliance reads those
-- days from `played_days` and the others from `receipts`. A day is written once closed
-- (SqliteStore::compact_played); a receipt stored later for such a day is added to its
-- timeline in the same transaction. The receipts stay: they are the record.
CREATE TABLE played_days (
    day     INTEGER NOT NULL,        -- UTC days since the epoch, of started_at
    device  INTEGER NOT NULL,
    starts  BLOB NOT NULL,
    PRIMARY KEY (day, device)
) WITHOUT ROWID;

CREATE TABLE played_days_done (
    day     INTEGER PRIMARY KEY
);
