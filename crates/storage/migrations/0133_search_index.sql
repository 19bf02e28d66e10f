-- The search index (`crates/storage/src/search_index.rs`): for each finished UTC
-- hour, which events hold each searched dictionary id, and which hold a free
-- text (a failure summary, or a request or trace id kept as text). A search
-- then reads only the events that can match instead of every event of its
-- range. `events` is the hour's event count when the row was written.
--
-- A row is written once its hour is over and removed by the batch that adds an
-- event to its hour, so a row always lists every event of its hour; hours
-- without a row are read as before. Rows are built in the background, so a
-- database stored before this index gets it without a step at open.
CREATE TABLE usage_search_h (
    bucket_ms INTEGER PRIMARY KEY,
    events INTEGER NOT NULL,
    terms BLOB NOT NULL
);
