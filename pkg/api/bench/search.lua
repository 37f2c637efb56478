-- wrk script of `just bench-api`: every request searches a different term, so nothing is
-- answered from a cache. SEARCH_PATH is the route and fixed parameters.
local path = os.getenv("SEARCH_PATH") or "/v1/search/posts?limit=25&q="
math.randomseed(os.time())
request = function()
  return wrk.format("GET", path .. tostring(math.random(1, 999999)))
end
