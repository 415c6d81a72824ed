-- wrk script: every request is `POST /admin/sessions` creating a new logged-in session for a
-- distinct customer, shaped like a real one (the sidecar adds the UUID id and the owner).
-- BENCH_TAG makes customer ids differ between runs; BENCH_CREATE_LIMIT (optional) stops the
-- run after that many answers (run wrk with one thread so the count is global).
-- The Authorization header comes from wrk's -H option.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local tag = os.getenv("BENCH_TAG") or "0"
local limit = tonumber(os.getenv("BENCH_CREATE_LIMIT") or "0")
local sent = 0
local answered = 0

wrk.method = "POST"
wrk.path = "/admin/sessions"
wrk.headers["Content-Type"] = "application/json"

request = function()
  sent = sent + 1
  local body = string.format('{"customer_id":"c%s-%09d","logged_in":true}', tag, sent)
  return wrk.format(nil, nil, nil, body)
end

response = function(status, headers, body)
  answered = answered + 1
  if limit > 0 and answered >= limit then
    wrk.thread:stop()
  end
end
