-- wrk script: POST the body in the file named by the first script argument, and print
-- a JSON summary (requests, errors, latency percentiles in microseconds) at the end.
--
-- With "--binary FILE LENGTH", FILE is a Triton binary-extension body whose JSON header
-- is LENGTH bytes long (sent as Inference-Header-Content-Length).
--
-- With "--entities N" instead of a file, each request is a v2 body with one random
-- entity id out of u0001..uN (input "user_id"), for models with [features].
local entities = nil

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[1] == "--entities" then
    entities = tonumber(args[2])
    math.randomseed(os.time())
    return
  end
  local path = args[1]
  if args[1] == "--binary" then
    path = args[2]
    wrk.headers["Content-Type"] = "application/octet-stream"
    wrk.headers["Inference-Header-Content-Length"] = args[3]
  end
  local handle = assert(io.open(path, "rb"))
  wrk.body = handle:read("*a")
  handle:close()
end

function request()
  if entities == nil then
    return wrk.request()
  end
  local id = string.format("u%04d", math.random(1, entities))
  local body = '{"inputs":[{"name":"user_id","datatype":"BYTES","shape":[1],"data":["'
    .. id .. '"]}]}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
