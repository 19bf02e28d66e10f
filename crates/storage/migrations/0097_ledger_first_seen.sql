-- A ledger row naming an event row no longer repeats that row's
-- `created_at_ms` as its `first_seen_at_ms`: 0 stands for it (stored in no
-- bytes). Rows without an event row, or first seen at another time (moved from
-- the ledger of earlier releases), keep their time.
UPDATE usage_event_ledger SET first_seen_at_ms = 0
    WHERE event_id IS NOT NULL AND first_seen_at_ms <> 0
    AND first_seen_at_ms = (SELECT e.created_at_ms FROM usage_events e
        WHERE e.id = usage_event_ledger.event_id);
UPDATE usage_event_ledger_overflow SET first_seen_at_ms = 0
    WHERE event_id IS NOT NULL AND first_seen_at_ms <> 0
    AND first_seen_at_ms = (SELECT e.created_at_ms FROM usage_events e
        WHERE e.id = usage_event_ledger_overflow.event_id);
