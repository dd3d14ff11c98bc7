-- PostgreSQL equivalent of migrations/sqlite/0005_retired_through.sql: a retirement covers the
-- revisions up to through_rev; a revision uploaded later plays once approved.
-- Until now every upload deleted the retirement, so a stored one covers every revision there is.
ALTER TABLE adset_retired ADD COLUMN through_rev BIGINT NOT NULL DEFAULT 0;
-- Why, when not an operator's decision (e.g. the ad set's file was removed from schedules/).
ALTER TABLE adset_retired ADD COLUMN reason TEXT;
UPDATE adset_retired SET through_rev = COALESCE(
    (SELECT MAX(r.rev) FROM adset_revisions r WHERE r.adset = adset_retired.adset), 0);
