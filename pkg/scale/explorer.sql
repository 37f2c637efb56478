SELECT collection, count() AS rows, uniq(did) AS accounts FROM records GROUP BY collection ORDER BY rows DESC
