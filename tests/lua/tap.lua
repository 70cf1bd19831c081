-- tap.lua - the Test Anything Protocol for the Lua tests, read by prove(1).
--
--   local t = require "tap"
--   t.ok(cond, "name")            one test point
--   t.is(got, want, "name")       with both values shown on failure
--   t.done()                      prints the plan; exits 1 if any failed

local tap = {}
local run, failed = 0, 0

local function show(v)
	if type(v) == "string" then
		return (("%q"):format(v):gsub("\\\n", "\\n"))
	end
	return tostring(v)
end

function tap.ok(cond, name)
	run = run + 1
	if not cond then
		failed = failed + 1
	end
	io.write(cond and "" or "not ", "ok ", run, " - ", name, "\n")
	return cond
end

function tap.is(got, want, name)
	local good = tap.ok(got == want, name)
	if not good then
		tap.diag("  got:  " .. show(got))
		tap.diag("  want: " .. show(want))
	end
	return good
end

function tap.diag(msg)
	io.write("# ", msg, "\n")
end

function tap.done()
	io.write("1..", run, "\n")
	io.stdout:flush()
	os.exit(failed == 0 and 0 or 1)
end

return tap
