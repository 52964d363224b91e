/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SOCK_SEQPACKET messages with descriptors (SCM_RIGHTS) for the attach exchange. Received
 * descriptors are close-on-exec from the start (MSG_CMSG_CLOEXEC), and a message whose data or
 * control part was cut short never hands out a descriptor: they are all closed first.
 */
#include "fdpass.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "timeutil.h"

/* Room for FDPASS_MAX_FDS descriptors plus slack, so a sender that sends more is seen whole. */
#define FDPASS_CMSG_FDS (FDPASS_MAX_FDS * 2)

int fdpass_send(int sock, const void *buf, size_t len, const int *fds, int n_fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	/* An empty message would read as "peer closed" on the other side. */
	if (sock < 0 || !buf || len == 0 || n_fds < 0 || n_fds > FDPASS_MAX_FDS || (n_fds && !fds))
		return -EINVAL;
	if (n_fds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n_fds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n_fds);
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* Wait for input; the timeout covers the whole wait across EINTR. */
static int wait_readable(int sock, int timeout_ms)
{
	uint64_t deadline = timeout_ms < 0 ? 0 : time_now_ms() + (uint64_t)timeout_ms;
	struct pollfd pfd = {.fd = sock, .events = POLLIN};

	for (;;) {
		int ms = -1;

		if (timeout_ms >= 0) {
			uint64_t now = time_now_ms();
			ms = now >= deadline ? 0 : (int)(deadline - now);
		}
		int r = poll(&pfd, 1, ms);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* Collect every SCM_RIGHTS descriptor into got[]; returns how many. */
static int collect_fds(struct msghdr *msg, int *got, int cap)
{
	int n = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0))
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k && n < cap; i++)
			memcpy(&got[n++], CMSG_DATA(c) + (size_t)i * sizeof(int), sizeof(int));
	}
	return n;
}

ssize_t fdpass_recv(int sock, void *buf, size_t cap, int *fds, int max_fds, int *n_fds,
		    int timeout_ms)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FDPASS_CMSG_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	int got[FDPASS_CMSG_FDS];
	int n_got, ret;
	ssize_t n;

	if (sock < 0 || (!buf && cap) || max_fds < 0 || max_fds > FDPASS_MAX_FDS ||
	    (max_fds && !fds))
		return -EINVAL;
	for (int i = 0; i < max_fds; i++)
		fds[i] = -1;
	if (n_fds)
		*n_fds = 0;
	for (;;) {
		ret = wait_readable(sock, timeout_ms);
		if (ret)
			return ret;
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		msg.msg_flags = 0;
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n >= 0)
			break;
		/* Readable but nothing there (a spurious wake-up): wait again. */
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
	n_got = collect_fds(&msg, got, FDPASS_CMSG_FDS);
	if ((msg.msg_flags & MSG_TRUNC) || (msg.msg_flags & MSG_CTRUNC) || n_got > max_fds) {
		for (int i = 0; i < n_got; i++)
			close(got[i]);
		return (msg.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -EBADMSG;
	}
	if (n_got)
		memcpy(fds, got, sizeof(int) * (size_t)n_got);
	if (n_fds)
		*n_fds = n_got;
	return n;
}

int fdpass_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -errno;
	if (len != sizeof(uc))
		return -EPROTO;
	if (pid)
		*pid = uc.pid;
	if (uid)
		*uid = uc.uid;
	if (gid)
		*gid = uc.gid;
	return 0;
}

static int make_addr(const char *path, struct sockaddr_un *sa)
{
	if (!path || !*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	strcpy(sa->sun_path, path);
	return 0;
}

/*
 * A socket file left by a dead daemon refuses connections and may be replaced; one that
 * accepts belongs to a live daemon (-EADDRINUSE); anything that is not a socket is not ours.
 */
static int remove_stale(const char *path)
{
	struct stat st;
	int fd;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = fdpass_connect(path);
	if (fd >= 0) {
		close(fd);
		return -EADDRINUSE;
	}
	if (fd != -ECONNREFUSED)
		return fd;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int fdpass_listen(const char *path, int backlog, unsigned mode)
{
	struct sockaddr_un sa;
	int fd, ret;

	ret = make_addr(path, &sa);
	if (ret)
		return ret;
	ret = remove_stale(path);
	if (ret)
		return ret;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out_close;
	if (chmod(path, (mode_t)mode) < 0)
		goto out_unlink;
	if (listen(fd, backlog) < 0)
		goto out_unlink;
	return fd;
out_unlink:
	ret = -errno;
	unlink(path);
	close(fd);
	return ret;
out_close:
	ret = -errno;
	close(fd);
	return ret;
}

static int finish_connect(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	socklen_t len = sizeof(int);
	int r, soerr = 0;

	do {
		r = poll(&pfd, 1, -1);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		return -errno;
	return -soerr;
}

int fdpass_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd, ret;

	ret = make_addr(path, &sa);
	if (ret)
		return ret;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	ret = -errno;
	/* An interrupted connect goes on in the kernel: wait for it and read its outcome. */
	if (ret == -EINTR)
		ret = finish_connect(fd);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}
