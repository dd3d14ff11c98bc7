-- The API tokens that uploaded and approved each revision: the four-eyes rule compares these, not names.
-- NULL for files and for revisions stored before; those are compared by name.
ALTER TABLE adset_revisions ADD COLUMN uploaded_token INTEGER;
ALTER TABLE adset_revisions ADD COLUMN approved_token INTEGER;
