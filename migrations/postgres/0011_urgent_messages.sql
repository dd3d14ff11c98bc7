-- PostgreSQL equivalent of migrations/sqlite/0011_urgent_messages.sql: urgent messages, who asked, who approved (four eyes) and who cancelled.
-- The request is never changed once written; approval and cancellation are each written once (the trigger refuses anything else), and no row is deleted.
CREATE TABLE urgent_messages (
    id              TEXT PRIMARY KEY,       -- a ULID
    text            TEXT NOT NULL,
    targets         TEXT NOT NULL,          -- JSON: {"feeds": [...], "devices": [...]}
    expires_at      BIGINT NOT NULL,        -- ms since the epoch
    requested_by    TEXT NOT NULL,
    requested_token BIGINT,
    requested_at    BIGINT NOT NULL,
    approved_by     TEXT,
    approved_token  BIGINT,
    approved_at     BIGINT,
    cancelled_by    TEXT,
    cancelled_at    BIGINT
);
CREATE INDEX urgent_messages_expires ON urgent_messages (expires_at);

CREATE FUNCTION urgent_messages_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'urgent_messages: rows are kept for the audit';
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.text IS DISTINCT FROM OLD.text
       OR NEW.targets IS DISTINCT FROM OLD.targets OR NEW.expires_at IS DISTINCT FROM OLD.expires_at
       OR NEW.requested_by IS DISTINCT FROM OLD.requested_by
       OR NEW.requested_token IS DISTINCT FROM OLD.requested_token
       OR NEW.requested_at IS DISTINCT FROM OLD.requested_at
       OR (OLD.approved_at IS NOT NULL AND (NEW.approved_by IS DISTINCT FROM OLD.approved_by
           OR NEW.approved_token IS DISTINCT FROM OLD.approved_token
           OR NEW.approved_at IS DISTINCT FROM OLD.approved_at))
       OR (OLD.cancelled_at IS NOT NULL AND (NEW.cancelled_by IS DISTINCT FROM OLD.cancelled_by
           OR NEW.cancelled_at IS DISTINCT FROM OLD.cancelled_at)) THEN
        RAISE EXCEPTION 'urgent_messages: a request, its approval and its cancellation are written once';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER urgent_messages_append_only BEFORE UPDATE OR DELETE ON urgent_messages
FOR EACH ROW EXECUTE FUNCTION urgent_messages_append_only();
