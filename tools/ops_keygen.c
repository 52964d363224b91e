/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda keygen --out PREFIX`: a CURVE key pair for the tcp control endpoint, written as
 * PREFIX.secret (mode 0600, for memsvc's curve-secret or a remote client) and PREFIX.public
 * (the line to put in memsvc's tcp-keys file next to a tenant name). Keys are z85 text.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "sparda.h"

static int write_key(const char *path, const char *key, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (fd < 0) {
		fprintf(stderr, "keygen: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t n = strlen(key);
	int ok = write(fd, key, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
	if (close(fd) || !ok) {
		fprintf(stderr, "keygen: writing %s failed\n", path);
		unlink(path);
		return -1;
	}
	return 0;
}

int cmd_keygen(int argc, char **argv)
{
	char pub[41], sec[41], p_sec[4096], p_pub[4096];
	const char *prefix = NULL;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--out") && i + 1 < argc)
			prefix = argv[++i];
		else if (!strncmp(argv[i], "--out=", 6))
			prefix = argv[i] + 6;
		else
			prefix = NULL, i = argc;
	}
	if (!prefix || !*prefix) {
		fprintf(stderr, "usage: sparda keygen --out PREFIX\n"
				"Writes a CURVE key pair for memsvc's tcp endpoint: PREFIX.secret (mode "
				"0600; memsvc\n--curve-secret, or a remote client's key) and "
				"PREFIX.public (put 'TENANT PUBLIC-KEY'\nlines in the file memsvc "
				"--tcp-keys reads). Existing files are never overwritten.\n");
		return 2;
	}
	if (!zmq_has("curve") || zmq_curve_keypair(pub, sec) != 0) {
		fprintf(stderr, "keygen: this libzmq has no CURVE support\n");
		return 1;
	}
	if ((size_t)snprintf(p_sec, sizeof(p_sec), "%s.secret", prefix) >= sizeof(p_sec) ||
	    (size_t)snprintf(p_pub, sizeof(p_pub), "%s.public", prefix) >= sizeof(p_pub)) {
		fprintf(stderr, "keygen: prefix too long\n");
		return 2;
	}
	if (write_key(p_sec, sec, 0600))
		return 1;
	if (write_key(p_pub, pub, 0644)) {
		unlink(p_sec);
		return 1;
	}
	printf("%s\n", pub);
	return 0;
}
