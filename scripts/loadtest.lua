-- wrk script for scripts/loadtest.sh: POST one request body to every URL.
-- The body file is named by WRIT_BODY (default examples/ci-deploy.json).
local path = os.getenv("WRIT_BODY") or "examples/ci-deploy.json"
local file = assert(io.open(path, "rb"), "cannot open " .. path)
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

-- Count answers that were not 200 so that the summary shows them.
local bad = 0
function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  end
end
