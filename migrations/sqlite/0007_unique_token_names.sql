-- Token names are unique, revoked tokens' included: a name says who uploaded or approved a
-- revision, and `civicast token revoke NAME` must mean one token. Earlier databases may
-- hold a name twice: every copy but the oldest is renamed NAME#ID first.
UPDATE tokens SET name = name || '#' || id
WHERE id NOT IN (SELECT MIN(id) FROM tokens GROUP BY name);
CREATE UNIQUE INDEX tokens_name ON tokens (name);
