-- wrk script: PUT /v1/<collection>/<unique id> with a ~100-byte JSON document.
-- Each thread and connection writes ids of its own, so every request creates a new resource.
-- wrk -t2 -c32 -d10s -s bench/put_unique.lua http://127.0.0.1:8123
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  collection = args[1] or "bench"
  prefix = string.format("t%d-%d-", thread_id, math.random(1, 1000000000))
end

request = function()
  counter = counter + 1
  local id = prefix .. counter
  local body = string.format(
    '{"symbol":"ID%08d","price":%d.25,"volume":%d,"owner":"bench","tags":["a","b"],"ok":true}',
    counter, counter % 1000, counter * 7)
  return wrk.format("PUT", "/v1/" .. collection .. "/" .. id,
    { ["Content-Type"] = "application/json" }, body)
end

local errors = 0
response = function(status, headers, body)
  if status ~= 201 and status ~= 200 then
    errors = errors + 1
    if errors < 5 then print("status " .. status .. ": " .. body) end
  end
end
