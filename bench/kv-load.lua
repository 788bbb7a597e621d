-- wrk script for bench/compare-kv.sh: puts or gets of random keys from a fixed key space,
-- against Weft's /v1/kv or etcd's JSON gateway (/v3/kv/put, /v3/kv/range).
--
-- Configured through the environment (compare-kv.sh sets it):
--   KV_SIDE         weft | etcd
--   KV_OP           put | get
--   KV_KEYS         size of the key space (default 10000); keys are k0000000 .. k(KEYS-1)
--   KV_VALUE_BYTES  value size for puts (default 100)
--   KV_NS           Weft namespace, and etcd key prefix NS/ (default bench)
--   KV_TOKEN        Weft's bearer token
--   KV_SERIALIZABLE 1: etcd gets are serializable (local) instead of linearizable
--   KV_FILL         set to FROM: instead of random keys, put keys FROM .. KEYS-1 in order,
--                   split among KV_THREADS threads (thread t takes FROM+t, FROM+t+THREADS, ...),
--                   each thread starting over after its share (a fill; requests built as they
--                   go; the caller stops wrk once the keys are in)
--   KV_THREADS      the -t given to wrk, for KV_FILL
--
-- Every request is built once per thread in init(), so request() is a table lookup.
-- done() prints one machine-readable line starting with RESULT.

local side = os.getenv("KV_SIDE") or "weft"
local op = os.getenv("KV_OP") or "get"
local keys = tonumber(os.getenv("KV_KEYS") or "10000")
local value_bytes = tonumber(os.getenv("KV_VALUE_BYTES") or "100")
local ns = os.getenv("KV_NS") or "bench"
local token = os.getenv("KV_TOKEN") or ""
local serializable = os.getenv("KV_SERIALIZABLE") == "1"
local fill_from = tonumber(os.getenv("KV_FILL") or "")
local threads = tonumber(os.getenv("KV_THREADS") or "1")

local next_seed = 1

function setup(thread)
  thread:set("seed", next_seed)
  next_seed = next_seed + 1
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding, as etcd's gateway expects for bytes fields.
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1 = math.floor(n / 262144) % 64
    local d2 = math.floor(n / 4096) % 64
    local d3 = math.floor(n / 64) % 64
    local d4 = n % 64
    out[#out + 1] = alphabet:sub(d1 + 1, d1 + 1) .. alphabet:sub(d2 + 1, d2 + 1)
      .. (b and alphabet:sub(d3 + 1, d3 + 1) or "=")
      .. (c and alphabet:sub(d4 + 1, d4 + 1) or "=")
  end
  return table.concat(out)
end

-- The key and value of key number i; compare-kv.sh's preload writes the same.
local function key_of(i)
  return string.format("k%07d", i)
end

local function value_of(key)
  local v = key .. "="
  return v .. string.rep("x", value_bytes - #v)
end

local requests = {}

local next_key, first_key

function init(args)
  math.randomseed(seed or 1)
  if fill_from then
    if side ~= "weft" or op ~= "put" then
      error("KV_FILL is for Weft puts")
    end
    first_key = fill_from + (seed or 1) - 1
    next_key = first_key
    return
  end
  for i = 0, keys - 1 do
    local key = key_of(i)
    local req
    if side == "weft" then
      local path = "/v1/kv/" .. ns .. "/" .. key
      local headers = { ["Authorization"] = "Bearer " .. token }
      if op == "put" then
        headers["Content-Type"] = "application/octet-stream"
        req = wrk.format("PUT", path, headers, value_of(key))
      else
        req = wrk.format("GET", path, headers)
      end
    elseif side == "etcd" then
      local headers = { ["Content-Type"] = "application/json" }
      local k = base64(ns .. "/" .. key)
      if op == "put" then
        local body = '{"key":"' .. k .. '","value":"' .. base64(value_of(key)) .. '"}'
        req = wrk.format("POST", "/v3/kv/put", headers, body)
      else
        local body = '{"key":"' .. k .. '"' .. (serializable and ',"serializable":true' or "") .. "}"
        req = wrk.format("POST", "/v3/kv/range", headers, body)
      end
    else
      error("KV_SIDE must be weft or etcd, not " .. side)
    end
    requests[i + 1] = req
  end
end

-- A fill's next put, built now.
local function fill_request()
  if next_key >= keys then
    next_key = first_key
  end
  local key = key_of(next_key)
  next_key = next_key + threads
  local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/octet-stream" }
  return wrk.format("PUT", "/v1/kv/" .. ns .. "/" .. key, headers, value_of(key))
end

function request()
  if fill_from then
    return fill_request()
  end
  return requests[math.random(keys)]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d mean_us=%.0f max_us=%d "
      .. "non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
