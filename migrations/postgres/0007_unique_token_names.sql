-- PostgreSQL equivalent of migrations/sqlite/0007_unique_token_names.sql: token names are
-- unique, revoked tokens' included; every copy of a repeated name but the oldest is renamed
-- NAME#ID first.
UPDATE tokens SET name = name || '#' || id
WHERE id NOT IN (SELECT MIN(id) FROM tokens GROUP BY name);
CREATE UNIQUE INDEX tokens_name ON tokens (name);
