-- wrk script: POST the body in the file named by the first script argument, and print
-- a JSON summary (requests, errors, latency percentiles in microseconds) at the end.
local body_file = nil

function init(args)
  local handle = assert(io.open(args[1], "rb"))
  wrk.body = handle:read("*a")
  handle:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
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
