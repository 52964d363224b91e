/* SPDX-License-Identifier: Apache-2.0 */
/*
 * UNIX-domain SOCK_SEQPACKET helpers for the attach exchange: send and receive one message
 * with up to FDPASS_MAX_FDS file descriptors (SCM_RIGHTS), and read the peer's credentials.
 */
#ifndef SPARDA_COMMON_FDPASS_H
#define SPARDA_COMMON_FDPASS_H

#include <stddef.h>
#include <sys/types.h>

#define FDPASS_MAX_FDS 8

/* Send len bytes and n_fds descriptors in one message. Returns 0 or -errno. */
int fdpass_send(int sock, const void *buf, size_t len, const int *fds, int n_fds);

/*
 * Receive one message of at most cap bytes (a longer one is -EMSGSIZE) and up to max_fds
 * descriptors (extra or truncated descriptors are closed and -EBADMSG returned). Unused fd
 * slots are set to -1. timeout_ms < 0 waits forever. Returns bytes received (0 = peer closed),
 * or -errno (-ETIMEDOUT).
 */
ssize_t fdpass_recv(int sock, void *buf, size_t cap, int *fds, int max_fds, int *n_fds,
		    int timeout_ms);

/* Peer credentials of a connected UNIX socket (SO_PEERCRED). Returns 0 or -errno. */
int fdpass_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/* Listening SOCK_SEQPACKET socket at path (an existing stale socket file is replaced;
 * mode applied with chmod). Returns fd or -errno: -EADDRINUSE when a live listener answers at
 * path (its accept queue sees the probe as a connection that closes at once), -EEXIST when
 * path exists and is not a socket, -ENAMETOOLONG. */
int fdpass_listen(const char *path, int backlog, unsigned mode);
/* Connect to path, with SOCK_CLOEXEC. Returns fd or -errno. */
int fdpass_connect(const char *path);

#endif
