-- wrk script of benches/http.sh and benches/storm.sh: the warm pass. Presents every token of
-- TOKENS_FILE exactly once (thread k of WARM_THREADS takes lines k+1, k+1+WARM_THREADS, …), so
-- afterwards each live token has been seen once, as in production after every agent's first
-- call. A thread stops once it has its answers and creates WARM_DONE.<id>: wrk itself runs for
-- its whole -d whatever its threads do, so benches/support/load.sh sends it SIGINT (it then
-- reports as usual) once every thread has said it is done. Until a thread stops, a connection
-- that wants a request after the thread's last token repeats that token (at most one per
-- connection: a cache hit).
local credential = os.getenv("CREDENTIAL")
local bodies = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do
    if #line > 0 then bodies[#bodies + 1] = '{"token":"' .. line .. '","scope":"mail:read"}' end
end
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. credential
wrk.headers["Content-Type"] = "application/json"

local threads = {}
function setup(thread)
    thread:set("id", #threads)
    threads[#threads + 1] = thread
end

local step = tonumber(os.getenv("WARM_THREADS"))
local next_i, last, share, answers = 0, 0, 0, 0
not_ok = 0  -- answers other than 200 (read by done())

function init(args)
    next_i = id + 1
    for i = id + 1, #bodies, step do share = share + 1; last = i end
    -- More threads than tokens: this one sends a single repeat of the first token.
    if share == 0 then share, last, next_i = 1, 1, #bodies + 1 end
end

function request()
    local i = next_i
    if i > #bodies then i = last else next_i = next_i + step end
    return wrk.format(nil, nil, nil, bodies[i])
end

function response(status, headers, body)
    answers = answers + 1
    if status ~= 200 then not_ok = not_ok + 1 end
    if answers == share then
        local marker = io.open(os.getenv("WARM_DONE") .. "." .. id, "w")
        if marker then marker:close() end
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local bad = 0
    for _, thread in ipairs(threads) do bad = bad + thread:get("not_ok") end
    io.write(string.format("warm pass: %d tokens, %d requests, %d answers not 200\n", #bodies, summary.requests, bad))
end
