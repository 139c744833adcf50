-- name: duplicate_interactions
-- version: 1
-- description: Duplicate interaction records refused by validation (quarantine reason 'duplicate'): each duplicated (user, item, timestamp, event type) with its number of extra copies.
SELECT
    user_key,
    item_id,
    CAST(raw_timestamp AS VARCHAR) AS raw_timestamp,
    event_type,
    count(*) AS extra_copies
FROM analyst.quarantine
WHERE reason = 'duplicate'
GROUP BY ALL
ORDER BY extra_copies DESC, user_key, item_id, raw_timestamp
