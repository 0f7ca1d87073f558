-- wrk script of benches/ssf-push.sh: POST one SET per request to a signal source's push URL.
--
-- SETS_FILE holds one signed SET per line, each with its own `jti`. Thread i of n sends lines
-- i+1, i+1+n, i+1+2n, … in order, so no two requests carry the same SET until a thread has sent
-- its whole share; after that it starts over (replays: accepted, nothing written).
local sets = {}
for line in io.lines(os.getenv("SETS_FILE")) do
    if #line > 0 then sets[#sets + 1] = line end
end
wrk.method = "POST"
wrk.headers["Authorization"] = os.getenv("PUSH_AUTH")
wrk.headers["Content-Type"] = "application/secevent+jwt"

local threads = {}
function setup(thread)
    thread:set("id", #threads)
    threads[#threads + 1] = thread
end

-- The thread count (setup() fills `threads` in the main state only).
local count = tonumber(os.getenv("WRK_THREADS")) or 1
local next_index
function init(args)
    next_index = (id or 0) + 1
end

function request()
    local body = sets[next_index]
    next_index = next_index + count
    if next_index > #sets then next_index = (id or 0) + 1 end
    return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
    if status ~= 202 then
        io.stderr:write("push answered " .. status .. ": " .. body .. "\n")
    end
end
