-- PostgreSQL equivalent of migrations/sqlite/0009_played_days.sql: nothing to add. A closed
-- day's receipts are already packed per display and day (0004, `receipts_packed`), starts
-- in an array, and compliance reads those arrays as they are.
SELECT 1;
