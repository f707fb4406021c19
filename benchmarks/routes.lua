-- wrk script: cycles over /bench/route-0 .. /bench/route-(N-1); N follows `--` on the command line.
local routes, sent = 1, 0

function init(args)
  routes = tonumber(args[1])
end

function request()
  sent = sent + 1
  return wrk.format("GET", "/bench/route-" .. (sent % routes))
end
