-- wrk script of the soak benchmark (benches/soak/run): every connection of a
-- thread takes the next request of a 12-slot rotation, so the gateway sees a
-- steady mix of valid, refused and cached requests.
--
--   wrk ... -s mix.lua URL -- LIMIT CACHE_VARIANTS API_KEY PROGRESS_DIR
--
-- LIMIT: requests this thread sends before it stops (wrk's -d is the time cap).
-- CACHE_VARIANTS: how many distinct /cached/items/N paths are rotated over.
-- API_KEY: the key the api_key route accepts.
-- PROGRESS_DIR: each thread writes its count of requests sent to
-- PROGRESS_DIR/thread-<id> every PROGRESS_EVERY requests, and "<count> done"
-- when it stops (wrk itself keeps sleeping until -d, so ./run reads these
-- files and interrupts wrk, which then prints its summary).

local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("id", next_id)
end

local PROGRESS_EVERY = 5000
local limit, variants, counter, idem_n = 0, 1, 0, 0
local progress = nil
local fixed, cached = {}, {}
local body = '{"amount":"12.34","currency":"EUR","card":"tok_visa"}'

function init(args)
   limit = tonumber(args[1]) or 0
   variants = tonumber(args[2]) or 1
   local key = args[3] or ""
   if args[4] then
      progress = args[4] .. "/thread-" .. id
   end
   local json = { ["Content-Type"] = "application/json" }
   fixed.pass = wrk.format("GET", "/pass/items/42")
   fixed.pass_post = wrk.format("POST", "/pass/items", json, body)
   fixed.nokey = wrk.format("GET", "/keyed/items/42")
   fixed.badkey = wrk.format("GET", "/keyed/items/42", { ["x-api-key"] = "sk_soak_wrong" })
   fixed.goodkey = wrk.format("GET", "/keyed/items/42", { ["x-api-key"] = key })
   fixed.limited = wrk.format("GET", "/limited/items/42")
   fixed.noroute = wrk.format("GET", "/nowhere/items/42")
   for i = 1, variants do
      cached[i] = wrk.format("GET", "/cached/items/" .. i)
   end
end

local function report(suffix)
   if progress then
      local f = io.open(progress, "w")
      if f then
         f:write(counter .. suffix .. "\n")
         f:close()
      end
   end
end

local function idem(n)
   return wrk.format("POST", "/idem/payments", {
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "soak-" .. id .. "-" .. n,
   }, '{"n":' .. n .. ',"amount":"12.34","currency":"EUR"}')
end

function request()
   counter = counter + 1
   if counter == limit then
      report(" done")
      wrk.thread:stop()
   elseif counter % PROGRESS_EVERY == 0 then
      report("")
   end
   local slot = counter % 12
   if slot == 0 then return fixed.pass
   elseif slot <= 3 then                           -- walks over all the variants
      return cached[(math.floor(counter / 12) * 3 + slot - 1) % variants + 1]
   elseif slot == 4 then return fixed.nokey        -- 401 missing_key
   elseif slot == 5 then return fixed.badkey       -- 401 invalid_key
   elseif slot == 6 then return fixed.goodkey      -- 200
   elseif slot == 7 then return fixed.limited      -- 429
   elseif slot == 8 then                           -- a new key: stored
      idem_n = idem_n + 1
      return idem(idem_n)
   elseif slot == 9 then                           -- a retry: replayed (an older key), or
      if idem_n > 16 and math.floor(counter / 12) % 4 ~= 0 then   -- the newest one: often 409, still in flight
         return idem(idem_n - 16)
      end
      return idem(idem_n)
   elseif slot == 10 then return fixed.pass_post
   else return fixed.noroute                       -- 404
   end
end
