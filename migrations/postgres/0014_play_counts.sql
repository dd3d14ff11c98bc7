-- PostgreSQL equivalent of migrations/sqlite/0014_play_counts.sql: receipts per play and
-- status, kept in the receipts' transaction, for reconciliation. Raw and packed receipts
-- alike are counted (`receipts_all`). Retention deletes a play's row with its partition.
CREATE TABLE rollup_play (
    play        BIGINT NOT NULL,
    status      SMALLINT NOT NULL,
    receipts    BIGINT NOT NULL,
    PRIMARY KEY (play, status)
);

INSERT INTO rollup_play (play, status, receipts)
SELECT play, status, COUNT(*) FROM receipts_all GROUP BY play, status;
