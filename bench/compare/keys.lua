-- wrk script for bench/compare.sh: which URLs to ask for, and one
-- machine-readable result line.
--
--   wrk ... -s keys.lua URL -- MODE SEED [RUN_ID]
--
-- MODE
--   hot      /products/1 only
--   uniform  products uniform over 1..10000; 10 % category listings (1..50)
--   zipf     products Zipf(s = 1.0) over 1..10000 (rank r is product r);
--            10 % category listings, Zipf over 1..50
--   miss     /miss/products/{uniform id}?n=RUN_ID-THREAD-COUNTER: a URL no
--            proxy has seen, so every request is a miss (RUN_ID must differ
--            between runs)
-- Each thread seeds its own generator from SEED and its number, so every
-- server given the same SEED is asked the same sequence of keys.
--
-- done() prints: RESULT <req/s> <p50 ms> <p99 ms> <requests> <errors>
-- where errors = connect + read + write + timeout + non-2xx/3xx answers.

local PRODUCTS, CATEGORIES, CATEGORY_SHARE = 10000, 50, 0.10

local counter = 1
local threads = {}

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

local function zipf_cdf(n, s)
   local cdf, sum = {}, 0
   for k = 1, n do
      sum = sum + 1 / (k ^ s)
      cdf[k] = sum
   end
   for k = 1, n do cdf[k] = cdf[k] / sum end
   return cdf
end

-- smallest k with cdf[k] >= u
local function zipf_draw(cdf, u)
   local lo, hi = 1, #cdf
   while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
   end
   return lo
end

local mode, run_id, seq = "hot", "", 0
local product_cdf, category_cdf, hot_request

function init(args)
   mode = args[1] or "hot"
   local seed = tonumber(args[2]) or 1
   run_id = args[3] or tostring(os.time())
   math.randomseed(seed * 104729 + (id or 0) * 7919)
   if mode == "zipf" then
      product_cdf = zipf_cdf(PRODUCTS, 1.0)
      category_cdf = zipf_cdf(CATEGORIES, 1.0)
   elseif mode == "hot" then
      hot_request = wrk.format("GET", "/products/1")
   elseif mode ~= "uniform" and mode ~= "miss" then
      error("unknown mode " .. mode)
   end
end

function request()
   if mode == "hot" then
      return hot_request
   elseif mode == "miss" then
      seq = seq + 1
      return wrk.format("GET", "/miss/products/" .. math.random(PRODUCTS)
                        .. "?n=" .. run_id .. "-" .. (id or 0) .. "-" .. seq)
   end
   local zipf = mode == "zipf"
   if math.random() < CATEGORY_SHARE then
      local c = zipf and zipf_draw(category_cdf, math.random()) or math.random(CATEGORIES)
      return wrk.format("GET", "/categories/" .. c .. "/products")
   end
   local p = zipf and zipf_draw(product_cdf, math.random()) or math.random(PRODUCTS)
   return wrk.format("GET", "/products/" .. p)
end

function done(summary, latency, requests)
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.timeout + e.status
   local secs = summary.duration / 1e6
   io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
                          summary.requests / secs,
                          latency:percentile(50) / 1000,
                          latency:percentile(99) / 1000,
                          summary.requests, errors))
end
