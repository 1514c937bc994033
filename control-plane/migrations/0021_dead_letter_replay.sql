-- A dead-lettered record corrected and replayed: the execution that took it
-- on from its mapping step (status `replayed`).
ALTER TABLE dead_letter_items ADD COLUMN replay_execution_id TEXT;
