-- Receipts per play and status (`rollup_play`), kept in the receipts' transaction, for
-- reconciliation: planned against played read every receipt of the period, joined to its
-- plays (3.6 s for a day at 100 M receipts). A play reaches hundreds of displays, so this is
-- one row per play and status, not per receipt. Receipts of displays that were offline at
-- issue are still read from `receipts`, by key: they move a member from "offline" to
-- "played" (src/core/audit/reconcile.rs). Retention deletes a play's row with its receipts.
CREATE TABLE rollup_play (
    play        INTEGER NOT NULL,
    status      INTEGER NOT NULL,    -- as receipts.status
    receipts    INTEGER NOT NULL,
    PRIMARY KEY (play, status)
) WITHOUT ROWID;

-- Filled from the receipts already stored, so that no count is lost on the way forward.
INSERT INTO rollup_play (play, status, receipts)
SELECT play, status, COUNT(*) FROM receipts GROUP BY play, status;
