/*
 * perms.h - whether a config file could have been written by someone other
 * than root and the daemon's own user.
 *
 * Whoever can write the config decides which senders may claim any client
 * address, and where connections go: a file or a directory above it that
 * others can write is refused, as sshd's StrictModes and sudo refuse theirs.
 */
#ifndef NPD_PERMS_H
#define NPD_PERMS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Check the file open on fd, which was opened by path, and every directory
 * above it (as path names them and as they really are, symbolic links
 * resolved). Owners may be root or this process's effective user; nothing
 * may be writable by others, nor by a group other than root's; a directory
 * writable by all is accepted when it is sticky (/tmp), since its entries
 * cannot then be replaced by others. Returns true when safe, else false
 * with the reason, naming the file or directory and the fix, in why.
 */
bool npd_file_safe(int fd, const char *path, char *why, size_t cap);

#endif /* NPD_PERMS_H */
