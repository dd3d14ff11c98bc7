-- Inspections and findings: a company bound to a token, units' visits, photos by SHA-256, findings and their events.
-- Visits, photos, findings and events are written once: the triggers refuse every update and delete, so a finding's history is its events (who, when, what), never a row changed in place.
ALTER TABLE tokens ADD COLUMN company TEXT;  -- the operating company of a `company` token

CREATE TABLE inspections (
    id          TEXT PRIMARY KEY,   -- a ULID
    unit        TEXT NOT NULL,
    company     TEXT NOT NULL,      -- the unit's, when visited
    at          INTEGER NOT NULL,   -- the visit, ms since the epoch
    by_name     TEXT NOT NULL,
    by_token    INTEGER,
    recorded_at INTEGER NOT NULL,
    items       TEXT NOT NULL,      -- JSON: [{"item", "pass", "note", "photos"}]
    evidence    TEXT                -- JSON: the receipts around the visit, for a unit with a display
);
CREATE INDEX inspections_at ON inspections (at);

CREATE TABLE photos (
    sha256      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    stored_at   INTEGER NOT NULL
);

CREATE TABLE findings (
    id          TEXT PRIMARY KEY,   -- a ULID
    unit        TEXT NOT NULL,
    company     TEXT NOT NULL,
    item        TEXT NOT NULL,
    inspection  TEXT REFERENCES inspections (id),
    display     TEXT
);
CREATE INDEX findings_company ON findings (company);

CREATE TABLE finding_events (
    finding     TEXT NOT NULL REFERENCES findings (id),
    seq         INTEGER NOT NULL,   -- 1, 2, ...: two writers of the same next event, one wins
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    by_name     TEXT NOT NULL,
    by_token    INTEGER,
    note        TEXT,
    photos      TEXT NOT NULL,      -- JSON array of SHA-256 names
    deadline    INTEGER,
    source      TEXT,
    PRIMARY KEY (finding, seq)
);

CREATE TRIGGER inspections_append_only BEFORE UPDATE ON inspections
BEGIN SELECT RAISE(ABORT, 'inspections: a visit is written once'); END;
CREATE TRIGGER inspections_no_delete BEFORE DELETE ON inspections
BEGIN SELECT RAISE(ABORT, 'inspections: rows are kept for the audit'); END;
CREATE TRIGGER photos_append_only BEFORE UPDATE ON photos
BEGIN SELECT RAISE(ABORT, 'photos: a photo is written once'); END;
CREATE TRIGGER photos_no_delete BEFORE DELETE ON photos
BEGIN SELECT RAISE(ABORT, 'photos: rows are kept for the audit'); END;
CREATE TRIGGER findings_append_only BEFORE UPDATE ON findings
BEGIN SELECT RAISE(ABORT, 'findings: a finding changes by its events only'); END;
CREATE TRIGGER findings_no_delete BEFORE DELETE ON findings
BEGIN SELECT RAISE(ABORT, 'findings: rows are kept for the audit'); END;
CREATE TRIGGER finding_events_append_only BEFORE UPDATE ON finding_events
BEGIN SELECT RAISE(ABORT, 'finding_events: an event is written once'); END;
CREATE TRIGGER finding_events_no_delete BEFORE DELETE ON finding_events
BEGIN SELECT RAISE(ABORT, 'finding_events: rows are kept for the audit'); END;
