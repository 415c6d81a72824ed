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
-- Like the sidecar's hot path (store/memory.rs touch granularity), a lookup does not rewrite
-- the entry; the dict's TTL is the session's remaining life when loaded.
local ffi = require "ffi"

ffi.cdef [[unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);]]

local C = ffi.C
local dict = ngx.shared.sessions
local clear_header, set_header = ngx.req.clear_header, ngx.req.set_header
local find, sub, byte, gsub = string.find, string.sub, string.byte, string.gsub
local concat = table.concat

local _M = {}

-- The sidecar's [identity_headers] in bench/lib.sh, in its order; all stripped from clients.
local IDENTITY = { "X-Session-Id", "X-Customer-Id", "X-Agent-Id", "X-Visit-Id",
  "X-Global-Visit-Id", "X-Application-Key", "X-Session-Logged-In", "X-Auth-Subject" }
local N_IDENTITY = #IDENTITY

-- The record's fields after the id, in the file's order.
-- customer, agent, visit, global visit, application key, tenant, logged_in, created, expires
local FIELDS = 9

local tokens = {} -- SHA-256 digest (32 raw bytes) -> credential name
local digest = ffi.new("unsigned char[32]")

local function unhex(h)
  return (gsub(h, "..", function(x) return string.char(tonumber(x, 16)) end))
end

-- init_by_lua: SESSIONS_FILE lines "id\tcustomer\tagent\tvisit\tgvisit\tappkey\ttenant\t
-- logged_in\tcreated_at\texpires_at\tttl_seconds"; TOKENS_FILE lines "sha256hex\tname".
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

-- The record's fields; an empty field is nil.
local function fields(rec)
  local out, pos = {}, 1
  for i = 1, FIELDS do
    local tab = find(rec, "\t", pos, true)
    local v = sub(rec, pos, (tab or 0) - 1)
    if v ~= "" then out[i] = v end
    if not tab then break end
    pos = tab + 1
  end
  return out
end

function _M.forward(required)
  local sid = ngx.var.http_x_session_id
  local rec = sid and dict:get(sid)
  for i = 1, N_IDENTITY do clear_header(IDENTITY[i]) end
  if not rec then
    if required then
      return answer(401, '{"error":"session_required","message":"A live session is required"}')
    end
    return
  end
  local f = fields(rec)
  set_header("X-Session-Id", sid)
  if f[1] then set_header("X-Customer-Id", f[1]) end
  if f[2] then set_header("X-Agent-Id", f[2]) end
  if f[3] then set_header("X-Visit-Id", f[3]) end
  if f[4] then set_header("X-Global-Visit-Id", f[4]) end
  if f[5] then set_header("X-Application-Key", f[5]) end
  set_header("X-Session-Logged-In", f[7] == "true" and "true" or "false")
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
  if not rec then return kc_error(404, "Session not found") end
  local f = fields(rec)
  return answer(200, concat({
    '{"sessionId":', json_string(id),
    ',"customerId":', json_string(f[1]),
    ',"agentId":', json_string(f[2]),
    ',"visitId":', json_string(f[3]),
    ',"globalVisitId":', json_string(f[4]),
    ',"tenantId":', json_string(f[6]),
    ',"createdAt":', json_string(f[8]),
    ',"expiresAt":', json_string(f[9]), '}' }), true)
end

return _M
