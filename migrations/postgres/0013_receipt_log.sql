-- PostgreSQL equivalent of migrations/sqlite/0014_receipt_log.sql. The receipt log (src/core/tlog.rs, src/store/tlog.rs): an RFC 6962 tree over committed
-- batches of receipts, its state written in each batch's own transaction.
--
-- One row of tree state: size (leaves), root, and the right edge (the roots of its perfect
-- subtrees, 32 bytes each) from which the next batch extends it. Leaf indices come from
-- `size`, never from a sequence. `pruned_before`: receipts of plays issued before it were
-- dropped by retention, so the live check reports them as pruned, not as deleted.
CREATE TABLE log_state (
    id            SMALLINT PRIMARY KEY CHECK (id = 1),
    size          BIGINT NOT NULL,
    root          BYTEA NOT NULL,
    edge          BYTEA NOT NULL,
    pruned_before BIGINT NOT NULL DEFAULT 0,
    -- Plays up to this key were issued before the log began (this migration): their
    -- receipts stored before it are in no leaf, and the live check counts them apart.
    before_play   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO log_state (id, size, root, edge)
VALUES (1, 0, '\xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'::bytea, ''::bytea);

UPDATE log_state SET before_play = (SELECT COALESCE(MAX(id), 0) FROM plays);

-- Every hash of the tree (leaves and complete interior nodes) at its dense stored-hash
-- index (tlog_tiles::stored_hash_index): tiles and proofs read them by index.
CREATE TABLE log_hashes (
    idx   BIGINT PRIMARY KEY,
    hash  BYTEA NOT NULL
);

-- Each leaf's member index: where its receipts are stored (play and display keys as varint
-- deltas) and one fingerprint byte each (src/core/tlog.rs `encode_members`).
CREATE TABLE log_leaves (
    idx      BIGINT PRIMARY KEY,
    count    BIGINT NOT NULL,
    members  BYTEA NOT NULL
);

-- Signed checkpoints (C2SP signed notes), one per signed size; the newest is served.
CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    note       TEXT NOT NULL,
    signed_at  BIGINT NOT NULL
);

-- Witnesses' cosignature lines (C2SP tlog-cosignature) on a signed checkpoint.
CREATE TABLE log_cosignatures (
    size     BIGINT NOT NULL,
    witness  TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
