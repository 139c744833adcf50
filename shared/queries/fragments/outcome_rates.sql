    count(*) AS exposures,
    count(*) FILTER (WHERE clicked) AS clicked,
    count(*) FILTER (WHERE played) AS played,
    count(*) FILTER (WHERE completed) AS completed,
    count(*) FILTER (WHERE disliked) AS disliked,
    round(count(*) FILTER (WHERE clicked) / count(*), 4) AS ctr,
    round(count(*) FILTER (WHERE played) / count(*), 4) AS play_rate
