-- `timestamp_sub_ms` held `10^n` plus every fraction digit of the timestamp
-- text (n of 4 to 9), although the first three are those of `timestamp_ms`. It
-- now holds `10^k` plus only the k digits beyond the millisecond (k of 1 to
-- 6): three bytes instead of four for nanoseconds. Values outside what the
-- earlier encoding wrote are left as they are.
UPDATE usage_events SET timestamp_sub_ms = CASE
        WHEN timestamp_sub_ms >= 1000000000 THEN 1000000 + timestamp_sub_ms % 1000000
        WHEN timestamp_sub_ms >= 100000000 THEN 100000 + timestamp_sub_ms % 100000
        WHEN timestamp_sub_ms >= 10000000 THEN 10000 + timestamp_sub_ms % 10000
        WHEN timestamp_sub_ms >= 1000000 THEN 1000 + timestamp_sub_ms % 1000
        WHEN timestamp_sub_ms >= 100000 THEN 100 + timestamp_sub_ms % 100
        ELSE 10 + timestamp_sub_ms % 10
    END
    WHERE typeof(timestamp_sub_ms) = 'integer' AND (
        timestamp_sub_ms BETWEEN 1000000000 AND 1999999999
        OR timestamp_sub_ms BETWEEN 100000000 AND 199999999
        OR timestamp_sub_ms BETWEEN 10000000 AND 19999999
        OR timestamp_sub_ms BETWEEN 1000000 AND 1999999
        OR timestamp_sub_ms BETWEEN 100000 AND 199999
        OR timestamp_sub_ms BETWEEN 10000 AND 19999);
