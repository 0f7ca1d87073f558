-- wrk script of benches/http.sh and benches/storm.sh: POST an authorize request body.
--
-- TOKENS=one: always the server's first token (TOKEN): the hot, cached path.
-- TOKENS=many: a token drawn uniformly at random from TOKENS_FILE for every request (per-thread
-- seed), so the server's token cache sees the whole population the way many agents would, not
-- a sequence it could learn.
-- STORM=1 (benches/storm.sh): the bench server appends `INDEX TOKEN` lines there as its
-- refresh storm rotates each session's token; every 64 requests this thread reads the lines
-- added since its last look and presents the new token for that session from then on.
local credential = os.getenv("CREDENTIAL")
local bodies = {}
local function body(token) return '{"token":"' .. token .. '","scope":"mail:read"}' end
if os.getenv("TOKENS") == "many" then
    for line in io.lines(os.getenv("TOKENS_FILE")) do
        if #line > 0 then bodies[#bodies + 1] = body(line) end
    end
else
    bodies[1] = body(os.getenv("TOKEN"))
end
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. credential
wrk.headers["Content-Type"] = "application/json"
wrk.body = bodies[1]

-- setup() runs in the main script state: give each thread an id for its seed and for done().
local threads = {}
function setup(thread)
    thread:set("id", #threads)
    threads[#threads + 1] = thread
end

local storm_file = os.getenv("STORM") == "1" and os.getenv("STORM_FILE") or nil
local storm, storm_pos, since_poll = nil, 0, 0
replaced = 0   -- tokens this thread swapped for a refreshed one (read by done())
presented = 0  -- requests this thread sent with a refreshed token

-- Takes the complete lines appended to STORM_FILE since the last poll.
local function poll()
    if storm == nil then storm = io.open(storm_file, "r") end
    if storm == nil then return end
    storm:seek("set", storm_pos)  -- also clears the EOF flag of the earlier read
    local chunk = storm:read("*a")
    if chunk == nil or #chunk == 0 then return end
    local complete = chunk:match(".*()\n")  -- just past the last newline: a line may be half written
    if complete == nil then return end
    for index, token in chunk:sub(1, complete):gmatch("(%d+) ([^\n]+)\n") do
        bodies[tonumber(index)] = body(token)
        fresh[tonumber(index)] = true
        replaced = replaced + 1
    end
    storm_pos = storm_pos + complete
end

function init(args)
    math.randomseed(os.time() * 1000 + (id or 0) * 7919)
    fresh = {}
end

if #bodies > 1 then
    request = function()
        if storm_file ~= nil then
            since_poll = since_poll + 1
            if since_poll >= 64 then since_poll = 0; poll() end
        end
        local i = math.random(#bodies)
        if storm_file ~= nil and fresh[i] then presented = presented + 1 end
        return wrk.format(nil, nil, nil, bodies[i])
    end
end

function done(summary, latency, requests)
    if storm_file == nil then return end
    local r, p = 0, 0
    for _, thread in ipairs(threads) do
        r = r + thread:get("replaced")
        p = p + thread:get("presented")
    end
    io.write(string.format("storm lines read (all threads): %d; requests with a refreshed token: %d\n", r, p))
end
