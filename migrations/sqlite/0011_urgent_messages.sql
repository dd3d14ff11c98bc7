-- Urgent messages: one text sent at once to feeds or displays, with its own expiry; who asked, who approved (four eyes) and who cancelled.
-- The request is never changed once written; approval and cancellation are each written once (the triggers refuse anything else), and no row is deleted: the record of who sent what stays.
-- Status is not stored: it follows from these times and the clock (core::urgent::UrgentMessage::status).
CREATE TABLE urgent_messages (
    id              TEXT PRIMARY KEY,       -- a ULID
    text            TEXT NOT NULL,
    targets         TEXT NOT NULL,          -- JSON: {"feeds": [...], "devices": [...]}
    expires_at      INTEGER NOT NULL,       -- ms since the epoch
    requested_by    TEXT NOT NULL,
    requested_token INTEGER,
    requested_at    INTEGER NOT NULL,
    approved_by     TEXT,
    approved_token  INTEGER,
    approved_at     INTEGER,
    cancelled_by    TEXT,
    cancelled_at    INTEGER
);
CREATE INDEX urgent_messages_expires ON urgent_messages (expires_at);

CREATE TRIGGER urgent_messages_append_only BEFORE UPDATE ON urgent_messages
WHEN NEW.id IS NOT OLD.id OR NEW.text IS NOT OLD.text OR NEW.targets IS NOT OLD.targets
  OR NEW.expires_at IS NOT OLD.expires_at OR NEW.requested_by IS NOT OLD.requested_by
  OR NEW.requested_token IS NOT OLD.requested_token OR NEW.requested_at IS NOT OLD.requested_at
  OR (OLD.approved_at IS NOT NULL AND (NEW.approved_by IS NOT OLD.approved_by
      OR NEW.approved_token IS NOT OLD.approved_token OR NEW.approved_at IS NOT OLD.approved_at))
  OR (OLD.cancelled_at IS NOT NULL AND (NEW.cancelled_by IS NOT OLD.cancelled_by
      OR NEW.cancelled_at IS NOT OLD.cancelled_at))
BEGIN
    SELECT RAISE(ABORT, 'urgent_messages: a request, its approval and its cancellation are written once');
END;

CREATE TRIGGER urgent_messages_no_delete BEFORE DELETE ON urgent_messages
BEGIN
    SELECT RAISE(ABORT, 'urgent_messages: rows are kept for the audit');
END;
