-- Compliance reads a period's presence and `played` receipt times. Neither table is keyed by
-- time: presence by (device, online_from) and receipts by (device, play), with no index on
-- started_at (it would cost about as much disk as the table). These two small indexes let
-- it read only the period: the plays that can have receipts in it (a receipt starts within
-- its play's [issued_at, expires_at] give or take two minutes), whose key range then
-- bounds each display's receipts; and the intervals opened before the period that are
-- still open at its start.
CREATE INDEX plays_expires ON plays (expires_at);
CREATE INDEX presence_until ON presence (online_until);
