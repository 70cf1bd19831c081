/*
 * test_npd_routing.c - the policy routing check reads netlink attributes
 * from the kernel: each is read within its length. A rule's input device
 * name is placed against a guard page, so a read past it faults.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "routing.h"
#include "tap.h"

/* len bytes of name copied to end exactly at an unmapped page. */
static const char *at_guard(const char *name, size_t len)
{
	static char *page;
	long size = sysconf(_SC_PAGESIZE);

	if (!page) {
		page = mmap(NULL, (size_t)size * 2, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (page == MAP_FAILED || mprotect(page + size, (size_t)size, PROT_NONE) != 0)
			return NULL;
	}
	memcpy(page + size - len, name, len);
	return page + size - len;
}

int main(void)
{
	static const struct {
		const char *name;
		size_t len;
		bool want;
	} cases[] = {
		{"lo", 3, true},   /* as the kernel sends it, NUL counted */
		{"lo", 2, true},   /* without the NUL */
		{"l", 1, false},   /* short: was read up to byte 2 */
		{"", 0, false},	   /* empty */
		{"lo0", 4, false}, /* another device */
		{"eth0", 5, false},
		{"lo\0x", 4, true},
	};

	plan((int)(sizeof(cases) / sizeof(cases[0])));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = at_guard(cases[i].name, cases[i].len);

		ok(p && npd_routing_is_lo(p, cases[i].len) == cases[i].want,
		   "FRA_IIFNAME \"%s\" of %zu bytes %s lo", cases[i].name, cases[i].len,
		   cases[i].want ? "is" : "is not");
	}
	return done_testing();
}
