/*
 * replay.c - run a libFuzzer target over stored inputs without libFuzzer.
 *
 *   replay PATH...
 *
 * Each PATH is a file or a directory whose regular files (one level, dot
 * files skipped) are inputs. Every input is read into a malloc'd buffer of
 * exactly its size, so an over-read is an over-read here too, and handed to
 * LLVMFuzzerTestOneInput(). Prints "replay PATH: N inputs" per argument.
 *
 * Exits non-zero on an I/O error or a missing or empty corpus directory: a
 * corpus that is silently empty would make `make replay` mean nothing.
 * A target signals failure by aborting.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libFuzzer's default -max_len is 4096; seeds stay far below this. */
#define REPLAY_MAX_SIZE (1u << 20)

static int failed;

/* Run one input file. Returns 1 when it ran, 0 when skipped, -1 on error. */
static int run_file(const char *path)
{
	struct stat st;
	FILE *f;
	uint8_t *buf;
	static uint8_t empty;
	size_t size, got;

	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		fclose(f);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		fclose(f);
		return 0;
	}
	if ((uintmax_t)st.st_size > REPLAY_MAX_SIZE) {
		fprintf(stderr, "replay: %s: skipped, %jd bytes is over %u\n", path,
			(intmax_t)st.st_size, REPLAY_MAX_SIZE);
		fclose(f);
		return 0;
	}
	size = (size_t)st.st_size;
	buf = malloc(size);
	if (!buf && size) {
		fprintf(stderr, "replay: %s: out of memory\n", path);
		fclose(f);
		return -1;
	}
	got = size ? fread(buf, 1, size, f) : 0;
	if (got != size || ferror(f)) {
		fprintf(stderr, "replay: %s: short read (%zu of %zu bytes)\n", path, got, size);
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf ? buf : &empty, size);
	free(buf);
	return 1;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file in dir, in name order. Returns the count, or -1. */
static long run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	long count = 0;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	errno = 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **grown;
			cap = cap ? 2 * cap : 64;
			grown = realloc(names, cap * sizeof(*names));
			if (!grown)
				goto oom;
			names = grown;
		}
		size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
		if (!(names[n] = malloc(len)))
			goto oom;
		snprintf(names[n], len, "%s/%s", dir, e->d_name);
		n++;
		errno = 0;
	}
	if (errno) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		count = -1;
	}
	closedir(d);

	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n && count >= 0; i++) {
		int r = run_file(names[i]);
		if (r < 0)
			count = -1;
		else
			count += r;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return count;

oom:
	fprintf(stderr, "replay: %s: out of memory\n", dir);
	closedir(d);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return -1;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;
		long count;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			failed = 1;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			count = run_dir(argv[i]);
			if (count == 0) {
				fprintf(stderr, "replay: %s: no inputs (an empty corpus checks nothing)\n",
					argv[i]);
				failed = 1;
				continue;
			}
		} else {
			count = run_file(argv[i]);
		}
		if (count < 0) {
			failed = 1;
			continue;
		}
		printf("replay %s: %ld inputs\n", argv[i], count);
	}
	return failed ? 1 : 0;
}
