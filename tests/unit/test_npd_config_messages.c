/*
 * test_npd_config_messages.c - config_messages.c on its own: a user's text
 * in a message, a value as a message shows it, the line a statement or a
 * nested key was written on, "FILE:LINE: KEY: what" for errors and
 * warnings, "did you mean", and Lua's own errors with the file's name.
 */
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "loader_check.h"
#include "tap.h"

/* The lines of a small config, as messages point into it. */
static const char source[] = "proxy_header_timeout =\n"  /* 1 */
			     "\t\"5\"\n"		   /* 2 */
			     "services = {\n"		   /* 3 */
			     "\tc2s = {\n"		   /* 4 */
			     "\t\t[\"connect\"] = 1,\n"	   /* 5 */
			     "\t},\n"			   /* 6 */
			     "}\n"			   /* 7 */
			     "x == 1\n"			   /* 8 */
			     "xservices = 2\n"		   /* 9 */
			     "proxy_port_mappings = { [15222] = \"c2s\" }\n"; /* 10 */

static void test_quote(void)
{
	static const struct {
		const char *s;
		size_t cap;
		const char *want;
	} cases[] = {
		{"abc", 80, "\"abc\""},
		{"", 80, "\"\""},
		{"a\tb\001\377", 80, "\"a?b??\""},
		{"abcdefghij", 10, "\"abcd...\""},
		{"abcd", 10, "\"abcd\""},
		{"abcde", 10, "\"abcd...\""},
	};
	char buf[80];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = cfg_quote(buf, cases[i].cap, cases[i].s, strlen(cases[i].s));

		if (!ok(got == buf && strcmp(buf, cases[i].want) == 0, "quote %s in %zu bytes",
			cases[i].want, cases[i].cap))
			diag("  got %s", buf);
	}
	/* The length counts, not a NUL: a NUL byte is unprintable. */
	cfg_quote(buf, sizeof(buf), "a\0b", 3);
	ok(strcmp(buf, "\"a?b\"") == 0, "a NUL byte is shown as '?'");
}

static void test_show(void)
{
	static const struct {
		const char *lua;
		const char *want;
	} cases[] = {
		{"5", "5"},
		{"-1", "-1"},
		{"2.5", "2.5"},
		{"1e10", "10000000000"},
		{"15222.0", "15222"},
		{"1/3", "0.33333333333333"},
		{"math.mininteger", "-9223372036854775808"},
		{"\"x\\ny\"", "\"x?y\""},
		{"true", "true"},
		{"false", "false"},
		{"nil", "nil"},
		{"{}", "table"},
		{"print", "function"},
	};
	char buf[80], chunk[64];
	lua_State *L = luaL_newstate();

	luaL_openlibs(L);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got;

		snprintf(chunk, sizeof(chunk), "return %s", cases[i].lua);
		if (luaL_dostring(L, chunk) != LUA_OK)
			diag("  %s", lua_tostring(L, -1));
		got = cfg_show(L, -1, buf, sizeof(buf));
		if (!ok(strcmp(got, cases[i].want) == 0, "show %s as %s", cases[i].lua, cases[i].want))
			diag("  got %s", got);
		lua_settop(L, 0);
	}
	lua_close(L);
}

static void test_statement_line(void)
{
	static const struct {
		int end;
		const char *name;
		int want;
	} cases[] = {
		{2, "proxy_header_timeout", 1}, /* the value on the next line */
		{7, "services", 3},		/* a table's closing brace */
		{7, "connect", 5},		/* ["key"] = is an assignment too */
		{8, "x", 8},			/* == is not */
		{9, "services", 3},		/* xservices is another name: on up */
		{10, "proxy_port_mappings", 10},
		{10, "15222", 10}, /* [15222] = */
		{7, "nothing", 7}, /* not written: the line Lua gave */
		{12, "services", 12}, /* past the end (line 11 is the empty one after the last \n) */
		{0, "services", 0},
	};

	/*
	 * Every line break Lua counts as one counts as one here too: a file
	 * written on Windows or on an old Mac gets the lines Lua names.
	 */
	static const char *const breaks[] = {"\n", "\r\n", "\r", "\n\r"};
	static char text[2 * sizeof(source)];

	for (size_t b = 0; b < sizeof(breaks) / sizeof(breaks[0]); b++) {
		size_t n = 0;

		for (const char *p = source; *p; p++)
			if (*p == '\n')
				n += (size_t)sprintf(text + n, "%s", breaks[b]);
			else
				text[n++] = *p;
		text[n] = '\0';
		loader_open(text, "{}");
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			is_int(cfg_statement_line(&ld_file, cases[i].end, cases[i].name,
						  strlen(cases[i].name)),
			       cases[i].want,
			       "%s assigned by the statement ending at line %d: line %d (breaks %zu)",
			       cases[i].name, cases[i].end, cases[i].want, b);
		loader_close();
	}
}

static void test_where(void)
{
	static const struct where cases[] = {{0, 0}, {0, 1}, {3, 70000}, {255, 2147483647}};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct where w = cfg_where_unpack(cfg_where_pack(cases[i]));

		ok(w.file == cases[i].file && w.line == cases[i].line, "file %d line %d packed",
		   cases[i].file, cases[i].line);
	}
}

static const struct {
	const char *path;
	int want;
} key_lines[] = {
	{"services", 3},
	{"services.c2s", 4},
	{"services.c2s.connect", 5},
	{"services[\"c2s\"]", 4},
	{"services.s2s", 3}, /* not written there: the statement */
	{"services.c2s.mark", 4},
	{"proxy_header_timeout", 1},
	{"proxy_port_mappings[15222]", 10},
	{"nothing", 0},
};
static size_t key_case;
static struct where key_got;

static void key_line_step(void)
{
	key_got = cfg_key_line(&ld, key_lines[key_case].path);
}

static void test_key_line(void)
{
	loader_open(source, "{}");
	loader_line("proxy_header_timeout", 2);
	loader_line("services", 7);
	loader_line("proxy_port_mappings", 10);
	for (key_case = 0; key_case < sizeof(key_lines) / sizeof(key_lines[0]); key_case++) {
		loader_run(key_line_step);
		ok(key_got.file == 0 && key_got.line == key_lines[key_case].want, "%s: line %d",
		   key_lines[key_case].path, key_lines[key_case].want);
	}
	loader_close();
}

static void fail_step(void)
{
	cfg_fail(&ld, "services.c2s.connect", "expected %s, got %d", "a string", 5);
}

static void fail_unknown_step(void)
{
	cfg_fail(&ld, "services.x", "missing");
}

static void fail_at_step(void)
{
	cfg_fail_at(&ld, (struct where){0, 2}, "%s is not %s", "\"5\"", "a number");
}

static void fail_nowhere_step(void)
{
	cfg_fail_at(&ld, (struct where){0, 0}, "nothing to listen on");
}

static void warn_step(void)
{
	cfg_warn(&ld, "services.c2s", "one");
	cfg_warn(&ld, "nothing", "two");
	cfg_warn_at(&ld, (struct where){0, 9}, "three %d", 3);
	cfg_warn_at(&ld, (struct where){0, 0}, "four");
}

static void long_step(void)
{
	char text[1000];

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	cfg_fail(&ld, "services", "%s", text);
}

static void test_fail_and_warn(void)
{
	static const struct {
		void (*step)(void);
		const char *want;
	} cases[] = {
		{fail_step, "t.lua:5: services.c2s.connect: expected a string, got 5"},
		{fail_unknown_step, "t.lua:3: services.x: missing"},
		{fail_at_step, "t.lua:2: \"5\" is not a number"},
		{fail_nowhere_step, "t.lua: nothing to listen on"},
	};

	loader_open(source, "{}");
	loader_line("services", 7);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int status = loader_run(cases[i].step);

		if (!ok(status == LUA_ERRRUN && ld.failed && strcmp(ld_diag.error, cases[i].want) == 0,
			"fails with %s", cases[i].want))
			diag("  got %d %s", status, ld_diag.error);
	}

	is_int(loader_run(warn_step), LUA_OK, "warnings do not unwind");
	if (!ok(warned.count == 4 && strcmp(warned.text, "t.lua:4: services.c2s: one\n"
							       "t.lua: nothing: two\n"
							       "t.lua:9: three 3\n"
							       "t.lua: four\n") == 0,
		"each warning with its line, when known"))
		diag("%s", warned.text);
	ld_diag.warn = NULL;
	is_int(loader_run(warn_step), LUA_OK, "no warn callback: warnings go nowhere");

	is_int(loader_run(long_step), LUA_ERRRUN, "a long message");
	ok(strlen(ld_diag.error) == sizeof(ld_diag.error) - 1 &&
		   strncmp(ld_diag.error, "t.lua:3: services: xxx", 22) == 0,
	   "... is cut to fit diag->error");
	loader_close();
}

static void test_nearest(void)
{
	static const char *const service_keys[] = {"connect", "send_proxy", "mark", "transparent",
						   "transparent_port"};
	static const struct {
		const char *name;
		const char *want;
	} cases[] = {
		{"proxy_trusted_proxy", "proxy_trusted_proxies"},
		{"proxy_header_timout", "proxy_header_timeout"},
		{"servces", "services"},
		{"sevrices", "services"}, /* two neighbours swapped: one edit */
		{"worker", "workers"},
		{"zzzz", NULL},
		{"", NULL},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL},
	};
	char buf[96];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = cfg_nearest(cases[i].name, cfg_key_names, K_COUNT);

		ok(cases[i].want ? got && strcmp(got, cases[i].want) == 0 : got == NULL,
		   "%s: %s", cases[i].name, cases[i].want ? cases[i].want : "nothing near");
	}
	ok(strcmp(cfg_nearest("mrk", service_keys, 5), "mark") == 0, "a short name: one letter off");
	ok(cfg_nearest("mk", service_keys, 5) == NULL, "... but not two");
	ok(strcmp(cfg_nearest("transparnt", service_keys, 5), "transparent") == 0,
	   "the nearest of two near names");
	ok(strcmp(cfg_did_you_mean(buf, sizeof(buf), "conect", service_keys, 5),
		  " (did you mean connect?)") == 0,
	   "did you mean connect?");
	ok(strcmp(cfg_did_you_mean(buf, sizeof(buf), "zzzz", service_keys, 5), "") == 0,
	   "nothing near: no hint");
}

static void test_lua_failure(void)
{
	static const struct {
		const char *error; /* NULL: a table */
		int status;
		const char *want;
	} cases[] = {
		{"\001" "0:3: boom", LUA_ERRRUN, "t.lua:3: boom"},
		{"\001" "0:4: unexpected symbol near '='", LUA_ERRSYNTAX,
		 "t.lua:4: unexpected symbol near '='"},
		{"x.lua:12: raised by the config", LUA_ERRRUN, "x.lua:12: raised by the config"},
		{"a:b:1: c", LUA_ERRRUN, "a:b:1: c"},
		{"plain words", LUA_ERRRUN, "t.lua: plain words"},
		{"a\nb:1: c", LUA_ERRRUN, "t.lua: a\nb:1: c"}, /* the position must be on line 1 */
		{"", LUA_ERRRUN, "t.lua: "},
		{NULL, LUA_ERRRUN, "t.lua: config raised an error that is a table, not a message"},
		{"not enough memory", LUA_ERRMEM, "t.lua: config uses too much memory (over 64 MiB)"},
	};

	loader_open(source, "{}");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].error)
			lua_pushstring(ld.L, cases[i].error);
		else
			lua_newtable(ld.L);
		cfg_lua_failure(&ld, cases[i].status);
		lua_pop(ld.L, 1);
		if (!ok(strcmp(ld_diag.error, cases[i].want) == 0, "Lua's error as %.*s%s",
			(int)strcspn(cases[i].want, "\n"), cases[i].want,
			strchr(cases[i].want, '\n') ? "\\n..." : ""))
			diag("  got %s", ld_diag.error);
	}
	loader_close();
}

int main(void)
{
	test_quote();
	test_show();
	test_statement_line();
	test_where();
	test_key_line();
	test_fail_and_warn();
	test_nearest();
	test_lua_failure();
	return done_testing();
}
