-- The inbox: the message ids each consumer has processed. A message's id is
-- recorded in the same transaction as its effect, so a copy delivered later
-- finds it and runs nothing. `duplicates` counts the copies that came again.
CREATE TABLE annals_inbox (
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    duplicates  integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, message_id)
);
