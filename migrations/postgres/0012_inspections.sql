-- PostgreSQL equivalent of migrations/sqlite/0012_inspections.sql: a company bound to a token, visits, photos, findings and their events.
-- Visits, photos, findings and events are written once: the trigger refuses every update and delete.
ALTER TABLE tokens ADD COLUMN company TEXT;

CREATE TABLE inspections (
    id          TEXT PRIMARY KEY,
    unit        TEXT NOT NULL,
    company     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    by_name     TEXT NOT NULL,
    by_token    BIGINT,
    recorded_at BIGINT NOT NULL,
    items       TEXT NOT NULL,
    evidence    TEXT
);
CREATE INDEX inspections_at ON inspections (at);

CREATE TABLE photos (
    sha256      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    stored_at   BIGINT NOT NULL
);

CREATE TABLE findings (
    id          TEXT PRIMARY KEY,
    unit        TEXT NOT NULL,
    company     TEXT NOT NULL,
    item        TEXT NOT NULL,
    inspection  TEXT REFERENCES inspections (id),
    display     TEXT
);
CREATE INDEX findings_company ON findings (company);

CREATE TABLE finding_events (
    finding     TEXT NOT NULL REFERENCES findings (id),
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    by_name     TEXT NOT NULL,
    by_token    BIGINT,
    note        TEXT,
    photos      TEXT NOT NULL,
    deadline    BIGINT,
    source      TEXT,
    PRIMARY KEY (finding, seq)
);

CREATE FUNCTION inspections_written_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%: rows are written once and kept for the audit', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER inspections_append_only BEFORE UPDATE OR DELETE ON inspections
FOR EACH ROW EXECUTE FUNCTION inspections_written_once();
CREATE TRIGGER photos_append_only BEFORE UPDATE OR DELETE ON photos
FOR EACH ROW EXECUTE FUNCTION inspections_written_once();
CREATE TRIGGER findings_append_only BEFORE UPDATE OR DELETE ON findings
FOR EACH ROW EXECUTE FUNCTION inspections_written_once();
CREATE TRIGGER finding_events_append_only BEFORE UPDATE OR DELETE ON finding_events
FOR EACH ROW EXECUTE FUNCTION inspections_written_once();
