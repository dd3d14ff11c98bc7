-- Console sessions: a signed-in browser's session, by a hash of its random id (the id itself
-- lives only in the browser's cookie), the token it was opened with, and when it ends.
CREATE TABLE console_sessions (
    hash        TEXT PRIMARY KEY,
    token       INTEGER NOT NULL REFERENCES tokens(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_token ON console_sessions (token);
