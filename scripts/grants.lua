-- wrk script for scripts/grantload.sh: POST /v1/grants, each request for a
-- subject of its own, or cycling over a fixed set of subjects.
--   WRIT_BODY      a request whose `subject.id` is the text @SUBJECT@
--   WRIT_SUBJECTS  0 (default): a new subject every request; N: cycle over
--                  N subjects (with the default pack's limit of 10 recent
--                  issuances, each is allowed 11 times, then denied)
--   WRIT_RUN       a prefix that keeps one run's subjects apart from the
--                  previous runs' (a PostgreSQL ledger outlives the server)
-- No response() callback (wrk would buffer every body); wrk still reports
-- non-2xx answers. 201 (allowed and recorded) and 200 (denied) are both 2xx.
local path = os.getenv("WRIT_BODY") or "body.json"
local subjects = tonumber(os.getenv("WRIT_SUBJECTS") or "0")
local run = os.getenv("WRIT_RUN") or tostring(os.time())
local file = assert(io.open(path, "rb"), "cannot open " .. path)
local template = file:read("*a")
file:close()
local at = assert(template:find("@SUBJECT@", 1, true), "no @SUBJECT@ in " .. path)
local head = template:sub(1, at - 1)
local tail = template:sub(at + #"@SUBJECT@")
local headers = { ["Content-Type"] = "application/json" }

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local n = 0
function request()
  n = n + 1
  local who
  if subjects > 0 then
    -- Threads share the subjects: thread t takes t, t + T, ... in turn.
    who = run .. "/s" .. ((n * 7919 + (tid or 0)) % subjects)
  else
    who = run .. "/t" .. (tid or 0) .. "/" .. n
  end
  return wrk.format("POST", nil, headers, head .. "spiffe://load.writ/" .. who .. tail)
end
