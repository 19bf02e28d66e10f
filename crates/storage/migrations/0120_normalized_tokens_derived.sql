-- The four normalized token counts of an event are, for every event the
-- decoder makes, a function of its raw counters and its cache input mode. They
-- are stored only when they differ from that function (events imported with
-- other figures); otherwise the row stores NULL (no bytes) and the columns of
-- the old names, now virtual, compute them. Readers see the same values.
--
-- With r = max(cache_read_tokens, 0), c = max(cache_creation_tokens, 0),
-- i = max(input_tokens, 0) and the cache read
-- R = max(max(cached_tokens, cache_tokens) - (r + c), 0) + r:
-- cache read R, cache creation c, and with the cache separate from the input
-- (mode 1) uncached input i and total input i + R + c, with the cache included
-- in the input (mode 0) uncached input max(i - R - c, 0) and total input i.
-- Without a mode, the counts are those stored (NULL for every event written).
-- `crates/storage/src/events.rs` (`derived_normalized`) computes the same.
ALTER TABLE usage_events RENAME COLUMN normalized_uncached_input_tokens
    TO normalized_uncached_input_stored;
ALTER TABLE usage_events RENAME COLUMN normalized_total_input_tokens
    TO normalized_total_input_stored;
ALTER TABLE usage_events RENAME COLUMN normalized_cache_read_tokens
    TO normalized_cache_read_stored;
ALTER TABLE usage_events RENAME COLUMN normalized_cache_creation_tokens
    TO normalized_cache_creation_stored;

ALTER TABLE usage_events ADD COLUMN normalized_uncached_input_tokens INTEGER
    GENERATED ALWAYS AS (coalesce(normalized_uncached_input_stored, CASE cache_input_mode
        WHEN 1 THEN max(input_tokens, 0)
        WHEN 0 THEN max(max(input_tokens, 0)
            - (max(max(cached_tokens, cache_tokens)
                - (max(cache_read_tokens, 0) + max(cache_creation_tokens, 0)), 0)
                + max(cache_read_tokens, 0))
            - max(cache_creation_tokens, 0), 0)
    END)) VIRTUAL;
ALTER TABLE usage_events ADD COLUMN normalized_total_input_tokens INTEGER
    GENERATED ALWAYS AS (coalesce(normalized_total_input_stored, CASE cache_input_mode
        WHEN 1 THEN max(input_tokens, 0)
            + (max(max(cached_tokens, cache_tokens)
                - (max(cache_read_tokens, 0) + max(cache_creation_tokens, 0)), 0)
                + max(cache_read_tokens, 0))
            + max(cache_creation_tokens, 0)
        WHEN 0 THEN max(input_tokens, 0)
    END)) VIRTUAL;
ALTER TABLE usage_events ADD COLUMN normalized_cache_read_tokens INTEGER
    GENERATED ALWAYS AS (coalesce(normalized_cache_read_stored, CASE
        WHEN cache_input_mode IN (0, 1) THEN max(max(cached_tokens, cache_tokens)
            - (max(cache_read_tokens, 0) + max(cache_creation_tokens, 0)), 0)
            + max(cache_read_tokens, 0)
    END)) VIRTUAL;
ALTER TABLE usage_events ADD COLUMN normalized_cache_creation_tokens INTEGER
    GENERATED ALWAYS AS (coalesce(normalized_cache_creation_stored, CASE
        WHEN cache_input_mode IN (0, 1) THEN max(cache_creation_tokens, 0)
    END)) VIRTUAL;

-- Stored counts equal to the computed ones (both integers of the same value)
-- are left to the computation; each column is judged on its own.
UPDATE usage_events SET
    normalized_uncached_input_stored = CASE WHEN typeof(d.u) = 'integer'
        AND typeof(normalized_uncached_input_stored) = 'integer'
        AND normalized_uncached_input_stored = d.u THEN NULL
        ELSE normalized_uncached_input_stored END,
    normalized_total_input_stored = CASE WHEN typeof(d.t) = 'integer'
        AND typeof(normalized_total_input_stored) = 'integer'
        AND normalized_total_input_stored = d.t THEN NULL
        ELSE normalized_total_input_stored END,
    normalized_cache_read_stored = CASE WHEN typeof(d.r) = 'integer'
        AND typeof(normalized_cache_read_stored) = 'integer'
        AND normalized_cache_read_stored = d.r THEN NULL
        ELSE normalized_cache_read_stored END,
    normalized_cache_creation_stored = CASE WHEN typeof(d.c) = 'integer'
        AND typeof(normalized_cache_creation_stored) = 'integer'
        AND normalized_cache_creation_stored = d.c THEN NULL
        ELSE normalized_cache_creation_stored END
FROM (
    SELECT id,
        CASE cache_input_mode
            WHEN 1 THEN max(input_tokens, 0)
            WHEN 0 THEN max(max(input_tokens, 0)
                - (max(max(cached_tokens, cache_tokens)
                    - (max(cache_read_tokens, 0) + max(cache_creation_tokens, 0)), 0)
                    + max(cache_read_tokens, 0))
                - max(cache_creation_tokens, 0), 0)
        END AS u,
        CASE cache_input_mode
            WHEN 1 THEN max(input_tokens, 0)
                + (max(max(cached_tokens, cache_tokens)
                    - (max(cache_read_tokens, 0) + max(cache_creation_tokens, 0)), 0)
                    + max(cache_read_tokens, 0))
                + max(cache_creation_tokens, 0)
            WHEN 0 THEN max(input_tokens, 0)
        END AS t,
        max(max(cached_tokens, cache_tokens)
            - (max(cache_read_tokens, 0) + max(cache_creation_tokens, 0)), 0)
            + max(cache_read_tokens, 0) AS r,
        max(cache_creation_tokens, 0) AS c
    FROM usage_events WHERE cache_input_mode IN (0, 1)
) AS d
WHERE usage_events.id = d.id;
