/*
 * perms.c - who else could have written a config file (perms.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "perms.h"

/* Whether st, of the object called name, is safe; else why not. */
static bool safe(const struct stat *st, const char *name, bool dir, char *why, size_t cap)
{
	uid_t me = geteuid();

	if (st->st_uid != 0 && st->st_uid != me) {
		snprintf(why, cap, "%s is owned by uid %u, not by root%s: refused, since whoever "
				   "writes the config decides who may claim any address (chown root)",
			 name, (unsigned)st->st_uid, me ? " or this user" : "");
		return false;
	}
	if ((st->st_mode & S_IWOTH) && !(dir && (st->st_mode & S_ISVTX))) {
		snprintf(why, cap, "%s is writable by anyone (mode %03o): refused, since whoever "
				   "writes the config decides who may claim any address (chmod o-w %s)",
			 name, (unsigned)(st->st_mode & 07777), name);
		return false;
	}
	if ((st->st_mode & S_IWGRP) && st->st_gid != 0) {
		snprintf(why, cap, "%s is writable by group %u (mode %03o): refused, since whoever "
				   "writes the config decides who may claim any address (chmod g-w %s)",
			 name, (unsigned)st->st_gid, (unsigned)(st->st_mode & 07777), name);
		return false;
	}
	return true;
}

/* Every directory above the absolute path abs, up to "/". */
static bool dirs_safe(const char *abs, char *why, size_t cap)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;

	if (snprintf(dir, sizeof(dir), "%s", abs) >= (int)sizeof(dir))
		return true; /* longer than any path open() took */
	while ((slash = strrchr(dir, '/')) != NULL) {
		if (slash == dir)
			slash[1] = '\0'; /* "/" itself */
		else
			*slash = '\0';
		if (stat(dir, &st) != 0) {
			snprintf(why, cap, "%s: %s", dir, strerror(errno));
			return false;
		}
		if (!safe(&st, dir, true, why, cap))
			return false;
		if (slash == dir)
			break;
	}
	return true;
}

bool npd_file_safe(int fd, const char *path, char *why, size_t cap)
{
	char given[PATH_MAX], real[PATH_MAX];
	struct stat st;

	if (fstat(fd, &st) != 0) {
		snprintf(why, cap, "%s: %s", path, strerror(errno));
		return false;
	}
	if (!safe(&st, path, false, why, cap))
		return false;
	if (path[0] == '/') {
		snprintf(given, sizeof(given), "%s", path);
	} else {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)))
			cwd[0] = '\0';
		snprintf(given, sizeof(given), "%s/%s", cwd, path);
	}
	if (!dirs_safe(given, why, cap))
		return false;
	/* The directories the file really lies in, when links lead elsewhere. */
	if (realpath(path, real) && strcmp(real, given) != 0 && !dirs_safe(real, why, cap))
		return false;
	return true;
}
