-- One leaky bucket (the meter form), checked atomically on the Redis server's clock.
-- KEYS[1]  the bucket: one key per (rule, client)
-- ARGV[1]  capacity, in requests
-- ARGV[2]  leak rate, requests per second
-- State: "<level> <time in microseconds>", expiring when the bucket would be empty.
-- Returns {1 admitted | 0 rejected, "<level after the check>"}; a reject writes nothing.
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local level = 0
local state = redis.call('GET', KEYS[1])
if state then
    local stored, at = string.match(state, '^(%S+) (%S+)$')
    stored, at = tonumber(stored), tonumber(at)
    if stored and at then
        local elapsed = now - at
        if elapsed < 0 then elapsed = 0 end
        level = stored - elapsed * rate / 1000000
        if level < 0 then level = 0 end
    end
end
if level + 1 <= capacity + 1e-9 then
    level = level + 1
    local ttl = math.ceil(level * 1000 / rate)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[1], string.format('%.17g %.0f', level, now), 'PX', ttl)
    return {1, string.format('%.17g', level)}
end
return {0, string.format('%.17g', level)}
