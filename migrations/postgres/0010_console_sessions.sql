-- PostgreSQL equivalent of migrations/sqlite/0010_console_sessions.sql: console sessions by a
-- hash of their random id, the token each was opened with, and when it ends.
CREATE TABLE console_sessions (
    hash        TEXT PRIMARY KEY,
    token       BIGINT NOT NULL REFERENCES tokens(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_token ON console_sessions (token);
