-- bench/lua/sidecar.lua: the sidecar's job done by nginx + Lua (libnginx-mod-http-lua), the
-- peer a team would otherwise deploy (issue 20, SPEC §13.6). bench/run measures it beside the
-- sidecar on the same sessions:
--   * forward(required): the session named by X-Session-Id looked up in a lua_shared_dict,
--     every client identity header stripped, the session's identity set (as the sidecar's
--     [identity_headers] in bench/lib.sh name them), 401 when a required session is missing;
--     nginx's proxy_pass with its keepalive upstream pool does the rest.
--   * kc_get(segment): Knowledge Center's `GET /gks-server/v1/sessions/{id}`: the bearer
--     credential checked against its SHA-256 (as the sidecar's token_sha256), the id decoded
--     and checked, and the SessionInfo JSON built from the dict, the same bytes as the sidecar's.
-- The sessions come from a file bench/run writes (load, from init_by_lua in the master, so
-- every worker shares one dict): one line per session, tab-separated, empty for absent.
-- Every use slides the idle deadline as the sidecar's store does (store/memory.rs touch):
-- the entry is rewritten with the new deadline and TTL, at most once a second per session.
local ffi = require "ffi"

ffi.cdef [[unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);]]

local C = ffi.C
local dict = ngx.shared.sessions
local clear_header, set_header = ngx.req.clear_header, ngx.req.set_header
local find, sub, gsub, format = string.find, string.sub, string.gsub, string.format
local concat, floor, min = table.concat, math.floor, math.min
local date = os.date

local _M = {}

-- The sidecar's [identity_headers] in bench/lib.sh, in its order; all stripped from clients.
local IDENTITY = { "X-Session-Id", "X-Customer-Id", "X-Agent-Id", "X-Visit-Id",
  "X-Global-Visit-Id", "X-Application-Key", "X-Session-Logged-In", "X-Auth-Subject" }
local N_IDENTITY = #IDENTITY

-- The record's fields after the id, in the file's order:
-- customer, agent, visit, global visit, application key, tenant, logged_in, and in
-- milliseconds since the epoch: created, expires, last access, idle timeout, absolute deadline.
local FIELDS = 12
local CUSTOMER, AGENT, VISIT, GVISIT, APPKEY, TENANT, LOGGED_IN = 1, 2, 3, 4, 5, 6, 7
local CREATED, EXPIRES, LAST, IDLE, ABSOLUTE = 8, 9, 10, 11, 12
-- As the sidecar's memory store: a use within this long of the last keeps the deadline.
local TOUCH_GRANULARITY_MS = 1000

local tokens = {} -- SHA-256 digest (32 raw bytes) -> credential name
local digest = ffi.new("unsigned char[32]")

local function unhex(h)
  return (gsub(h, "..", function(x) return string.char(tonumber(x, 16)) end))
end

-- init_by_lua: SESSIONS_FILE lines "id\t<the FIELDS fields>\tttl_seconds"; TOKENS_FILE lines
-- "sha256hex\tname".
function _M.load(sessions_file, tokens_file)
  for line in io.lines(sessions_file) do
    local id, rest, ttl = line:match("^([^\t]+)\t(.*)\t(%d+)$")
    if id then
      local ok, err = dict:set(id, rest, tonumber(ttl))
      if not ok then error("sessions dict: " .. err) end
    end
  end
  for line in io.lines(tokens_file) do
    local hex, name = line:match("^(%x+)\t(.+)$")
    if hex then tokens[unhex(hex)] = name end
  end
end

-- A JSON answer with its Content-Length (as the sidecar sends it), not chunked.
local function answer(status, body, no_store)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  if no_store then ngx.header["Cache-Control"] = "no-store" end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(status)
end

-- The record's fields, as strings ("" when absent).
local function fields(rec)
  local out, pos = {}, 1
  for i = 1, FIELDS do
    local tab = find(rec, "\t", pos, true)
    out[i] = sub(rec, pos, (tab or 0) - 1)
    if not tab then
      for j = i + 1, FIELDS do out[j] = "" end
      break
    end
    pos = tab + 1
  end
  return out
end

local function opt(v)
  if v == "" then return nil end
  return v
end

-- A use of session `id` now: slides its idle deadline (never past the absolute one) and
-- rewrites the entry, unless it was used within the touch granularity. False when the
-- session has ended: the deadline is checked to the millisecond, as the sidecar does.
local function touch(id, f)
  local now = floor(ngx.now() * 1000)
  if tonumber(f[EXPIRES]) <= now then
    dict:delete(id)
    return false
  end
  local idle = tonumber(f[IDLE])
  if idle == 0 or now - tonumber(f[LAST]) < min(TOUCH_GRANULARITY_MS, idle / 100) then
    return true
  end
  local expires = min(now + idle, tonumber(f[ABSOLUTE]))
  f[EXPIRES], f[LAST] = tostring(expires), tostring(now)
  dict:set(id, concat(f, "\t"), (expires - now) / 1000)
  return true
end

-- Milliseconds since the epoch as RFC 3339 with milliseconds, as the sidecar writes them.
local function rfc3339(ms)
  ms = tonumber(ms)
  return date("!%Y-%m-%dT%H:%M:%S", floor(ms / 1000)) .. format(".%03dZ", ms % 1000)
end

function _M.forward(required)
  local sid = ngx.var.http_x_session_id
  local rec = sid and dict:get(sid)
  local f = rec and fields(rec)
  for i = 1, N_IDENTITY do clear_header(IDENTITY[i]) end
  if not (f and touch(sid, f)) then
    if required then
      return answer(401, '{"error":"session_required","message":"A live session is required"}')
    end
    return
  end
  set_header("X-Session-Id", sid)
  if f[CUSTOMER] ~= "" then set_header("X-Customer-Id", f[CUSTOMER]) end
  if f[AGENT] ~= "" then set_header("X-Agent-Id", f[AGENT]) end
  if f[VISIT] ~= "" then set_header("X-Visit-Id", f[VISIT]) end
  if f[GVISIT] ~= "" then set_header("X-Global-Visit-Id", f[GVISIT]) end
  if f[APPKEY] ~= "" then set_header("X-Application-Key", f[APPKEY]) end
  set_header("X-Session-Logged-In", f[LOGGED_IN] == "true" and "true" or "false")
end

local function json_string(s)
  if s == nil then return "null" end
  if find(s, '["\\]') then s = gsub(s, '(["\\])', "\\%1") end
  return '"' .. s .. '"'
end

local function kc_error(status, description)
  return answer(status, '{"code":' .. status .. ',"description":' .. json_string(description) .. '}',
    true)
end

local function credential()
  local auth = ngx.var.http_authorization
  if not auth or sub(auth, 1, 7) ~= "Bearer " then return nil end
  local token = sub(auth, 8)
  C.SHA256(token, #token, digest)
  return tokens[ffi.string(digest, 32)]
end

function _M.kc_get(segment)
  if ngx.req.get_method() ~= "GET" then return kc_error(405, "Method not allowed") end
  if not credential() then return kc_error(401, "Invalid or missing credentials") end
  local id = ngx.unescape_uri(segment)
  if #id == 0 or #id > 256 or find(id, "[^A-Za-z0-9._~+/=-]") then
    return kc_error(400, "The session id must be 1-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
  end
  local rec = dict:get(id)
  local f = rec and fields(rec)
  if not (f and touch(id, f)) then return kc_error(404, "Session not found") end
  return answer(200, concat({
    '{"sessionId":', json_string(id),
    ',"customerId":', json_string(opt(f[CUSTOMER])),
    ',"agentId":', json_string(opt(f[AGENT])),
    ',"visitId":', json_string(opt(f[VISIT])),
    ',"globalVisitId":', json_string(opt(f[GVISIT])),
    ',"tenantId":', json_string(opt(f[TENANT])),
    ',"createdAt":"', rfc3339(f[CREATED]),
    '","expiresAt":"', rfc3339(f[EXPIRES]), '"}' }), true)
end

return _M
