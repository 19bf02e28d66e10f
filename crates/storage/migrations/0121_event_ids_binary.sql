-- Request ids of eight lowercase hex digits and trace ids in the lowercase
-- 8-4-4-4-12 form of a UUID are stored as their bytes (4 and 16): a blob in the
-- renamed columns `request_key` and `header_trace`; any other text stays text
-- there. The columns of the old names, now virtual, give the texts back, so
-- readers see the same values. `crates/storage/src/events.rs`
-- (`request_key`, `trace_key`) makes the same choice at ingest.
ALTER TABLE usage_events RENAME COLUMN request_id TO request_key;
ALTER TABLE usage_events RENAME COLUMN header_trace_id TO header_trace;

ALTER TABLE usage_events ADD COLUMN request_id TEXT
    GENERATED ALWAYS AS (CASE WHEN typeof(request_key) = 'blob'
        THEN lower(hex(request_key)) ELSE request_key END) VIRTUAL;
ALTER TABLE usage_events ADD COLUMN header_trace_id TEXT
    GENERATED ALWAYS AS (CASE WHEN typeof(header_trace) = 'blob'
        THEN lower(hex(substr(header_trace, 1, 4)) || '-' || hex(substr(header_trace, 5, 2))
            || '-' || hex(substr(header_trace, 7, 2)) || '-' || hex(substr(header_trace, 9, 2))
            || '-' || hex(substr(header_trace, 11, 6)))
        ELSE header_trace END) VIRTUAL;

UPDATE usage_events SET request_key = unhex(request_key)
    WHERE request_key GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]';
UPDATE usage_events SET header_trace = unhex(replace(header_trace, '-', ''))
    WHERE header_trace GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]';
