-- Collection gaps: periods during which the collector was not receiving events from CPA
-- (server down, CPA unreachable, key rejected, store failures). Charts use them to show
-- missing data instead of zero traffic.

CREATE TABLE collection_gaps (
    id INTEGER PRIMARY KEY,
    start_ms INTEGER NOT NULL,
    -- NULL while the gap is still open.
    end_ms INTEGER,
    cause TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX idx_collection_gaps_start ON collection_gaps (start_ms);

-- At most one gap is open at a time.
CREATE UNIQUE INDEX idx_collection_gaps_open ON collection_gaps ((end_ms IS NULL)) WHERE end_ms IS NULL;

-- The last moment the collector was known to be receiving. A start that finds it older
-- than a few heartbeat intervals opens a `server_down` gap from there.
CREATE TABLE collector_heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);
