-- Why an alert changed when no rule said so (e.g. its device was removed from the site file).
ALTER TABLE alert_events ADD COLUMN detail TEXT;
