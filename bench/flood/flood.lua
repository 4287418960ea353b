-- Unique product URLs (tagged entries) and unique cart writes (each
-- purging a key no one purged before).
math.randomseed(os.time())
local body = '{"items":[{"product_id":1,"qty":1}]}'
request = function()
  if math.random() < 0.7 then
    return wrk.format("GET", "/products/" .. math.random(1, 100000000))
  end
  return wrk.format("PUT", "/cart/" .. math.random(1, 1000000000),
    { ["Content-Type"] = "application/json" }, body)
end
