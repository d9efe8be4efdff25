-- Leaky buckets (the meter form), checked atomically on the Redis server's clock.
-- KEYS[i]        bucket i: one key per (rule, client); the same key may appear twice
-- ARGV[2i-1]     its capacity, in requests
-- ARGV[2i]       its leak rate, requests per second
-- A single server gets a whole batch of checks in one call; a cluster one key per call.
-- The state is one number: when the bucket will be empty, in microseconds since
-- 2020-09-13 (a recent epoch keeps sub-microsecond precision in a double). The level at
-- `now` is (empty_at - now) * rate, so draining needs no write, and the key expires
-- exactly when the bucket is empty. An admitted request moves empty_at one unit (1/rate
-- seconds) later; a rejected one writes nothing.
-- Returns {admitted_1 (1|0), "<level after check 1>", admitted_2, ...}.
local clock = redis.call('TIME')
local now = (clock[1] - 1600000000) * 1000000 + clock[2]
local result = {}
for i = 1, #KEYS do
    local capacity = tonumber(ARGV[2 * i - 1])
    local rate = tonumber(ARGV[2 * i])
    local state = redis.pcall('GET', KEYS[i])
    if type(state) == 'table' and state.err then
        -- not a bucket (e.g. a key of another type): this check fails, the others go on
        result[2 * i - 1] = state
        result[2 * i] = '0'
    else
        local empty_at = tonumber(state or 0) or 0
        if empty_at < now then empty_at = now end
        local level = (empty_at - now) * rate / 1000000
        if level + 1 <= capacity + 1e-9 then
            empty_at = empty_at + 1000000 / rate
            local ttl = math.ceil((empty_at - now) / 1000)
            if ttl < 1 then ttl = 1 end
            redis.call('SET', KEYS[i], string.format('%.17g', empty_at), 'PX', ttl)
            result[2 * i - 1] = 1
            result[2 * i] = string.format('%.17g', level + 1)
        else
            result[2 * i - 1] = 0
            result[2 * i] = string.format('%.17g', level)
        end
    end
end
return result
