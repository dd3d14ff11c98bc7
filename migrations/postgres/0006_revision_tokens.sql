-- PostgreSQL equivalent of migrations/sqlite/0006_revision_tokens.sql: the API tokens that uploaded
-- and approved each revision; the four-eyes rule compares these, not names.
-- NULL for files and for revisions stored before; those are compared by name.
ALTER TABLE adset_revisions ADD COLUMN uploaded_token BIGINT;
ALTER TABLE adset_revisions ADD COLUMN approved_token BIGINT;
