-- wrk script for scripts/loadtest.sh: POST one request body to every URL.
-- The body file is named by WRIT_BODY (default examples/ci-deploy.json).
-- No response() callback: wrk would then buffer every body, and the client
-- would compete harder with the server for the same two cores. wrk still
-- reports non-2xx answers in its summary.
local path = os.getenv("WRIT_BODY") or "examples/ci-deploy.json"
local file = assert(io.open(path, "rb"), "cannot open " .. path)
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
