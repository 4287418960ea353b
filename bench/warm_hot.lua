-- wrk script for bench/warm_hot.sh: products Zipf(s = 1.0) over
-- 1..PRODUCTS (rank r is product r), each thread seeded from SEED.
--
--   wrk ... -s warm_hot.lua URL -- PRODUCTS SEED

local counter = 1
function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

local cdf = {}

function init(args)
   local n = tonumber(args[1]) or 100000
   local seed = tonumber(args[2]) or 1
   math.randomseed(seed * 104729 + (id or 0) * 7919)
   local sum = 0
   for k = 1, n do
      sum = sum + 1 / k
      cdf[k] = sum
   end
   for k = 1, n do cdf[k] = cdf[k] / sum end
end

function request()
   local u, lo, hi = math.random(), 1, #cdf
   while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
   end
   return wrk.format("GET", "/products/" .. lo)
end
