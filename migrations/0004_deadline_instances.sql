-- Cancelling an instance's deadlines by name (a process that got its answer
-- in time) finds them by instance.
CREATE INDEX annals_deadlines_instance_idx ON annals_deadlines (process, instance);
