-- The receipt log (src/core/tlog.rs, src/store/tlog.rs): an RFC 6962 tree over committed
-- batches of receipts, its state written in each batch's own transaction.
--
-- One row of tree state: size (leaves), root, and the right edge (the roots of its perfect
-- subtrees, 32 bytes each) from which the next batch extends it. Leaf indices come from
-- `size`, never from a sequence. `pruned_before`: receipts of plays issued before it were
-- dropped by retention, so the live check reports them as pruned, not as deleted.
CREATE TABLE log_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    size          INTEGER NOT NULL,
    root          BLOB NOT NULL,
    edge          BLOB NOT NULL,
    pruned_before INTEGER NOT NULL DEFAULT 0,
    -- Plays up to this key were issued before the log began (this migration): their
    -- receipts stored before it are in no leaf, and the live check counts them apart.
    before_play   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO log_state (id, size, root, edge)
VALUES (1, 0, X'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', X'');

UPDATE log_state SET before_play = (SELECT COALESCE(MAX(id), 0) FROM plays);

-- Every hash of the tree (leaves and complete interior nodes) at its dense stored-hash
-- index (tlog_tiles::stored_hash_index): tiles and proofs read them by index.
CREATE TABLE log_hashes (
    idx   INTEGER PRIMARY KEY,
    hash  BLOB NOT NULL
);

-- Each leaf's member index: where its receipts are stored (play and display keys as varint
-- deltas) and one fingerprint byte each (src/core/tlog.rs `encode_members`).
CREATE TABLE log_leaves (
    idx      INTEGER PRIMARY KEY,
    count    INTEGER NOT NULL,
    members  BLOB NOT NULL
);

-- Signed checkpoints (C2SP signed notes), one per signed size; the newest is served.
CREATE TABLE log_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    signed_at  INTEGER NOT NULL
);

-- Witnesses' cosignature lines (C2SP tlog-cosignature) on a signed checkpoint.
CREATE TABLE log_cosignatures (
    size     INTEGER NOT NULL,
    witness  TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
