/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common/fdpass: pass an eventfd and a memfd through a SEQPACKET pair and use them, peer
 * credentials, size and descriptor limits (no descriptor may leak on a refused message),
 * timeouts, and the listen/connect helpers with stale-socket replacement.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdpass.h"

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void test_pass_and_use(void **state)
{
	int sv[2], fds[FDPASS_MAX_FDS], n_fds = -1;
	int efd = eventfd(0, EFD_CLOEXEC);
	int mfd = memfd_create("test_fdpass", MFD_CLOEXEC);
	char buf[64];
	uint64_t v = 0;

	pair(sv);
	assert_true(efd >= 0 && mfd >= 0);
	assert_int_equal(ftruncate(mfd, 4096), 0);
	int send_fds[2] = {efd, mfd};
	assert_int_equal(fdpass_send(sv[0], "attach", 6, send_fds, 2), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, FDPASS_MAX_FDS, &n_fds, 1000),
			 6);
	assert_memory_equal(buf, "attach", 6);
	assert_int_equal(n_fds, 2);
	for (int i = 2; i < FDPASS_MAX_FDS; i++)
		assert_int_equal(fds[i], -1);
	assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);

	/* The received eventfd is the same object: a write on it wakes the original. */
	v = 5;
	assert_int_equal(write(fds[0], &v, sizeof(v)), sizeof(v));
	v = 0;
	assert_int_equal(read(efd, &v, sizeof(v)), sizeof(v));
	assert_int_equal(v, 5);

	/* The memfd shares memory. */
	char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	char *q = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[1], 0);
	assert_true(p != MAP_FAILED && q != MAP_FAILED);
	strcpy(p, "shared bytes");
	assert_string_equal(q, "shared bytes");
	munmap(p, 4096);
	munmap(q, 4096);

	/* No descriptors: n_fds 0. */
	assert_int_equal(fdpass_send(sv[0], "x", 1, NULL, 0), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, 2, &n_fds, 1000), 1);
	assert_int_equal(n_fds, 0);
	assert_int_equal(fds[0], -1);

	close(efd);
	close(mfd);
	close(sv[0]);
	close(sv[1]);
}

static void test_peercred(void **state)
{
	int sv[2];
	pid_t pid = 0;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;

	pair(sv);
	assert_int_equal(fdpass_peercred(sv[1], &pid, &uid, &gid), 0);
	assert_int_equal(pid, getpid());
	assert_int_equal(uid, getuid());
	assert_int_equal(gid, getgid());
	assert_int_equal(fdpass_peercred(-1, &pid, &uid, &gid), -EBADF);
	close(sv[0]);
	close(sv[1]);
}

static void test_limits(void **state)
{
	int sv[2], fds[2], n_fds, base;
	char big[200], buf[16];
	int efd = eventfd(0, EFD_CLOEXEC);
	int many[FDPASS_MAX_FDS + 1];

	pair(sv);
	memset(big, 'x', sizeof(big));
	base = open_fds();

	/* Too long: -EMSGSIZE, and the descriptor that came with it is closed. */
	assert_int_equal(fdpass_send(sv[0], big, sizeof(big), &efd, 1), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, 2, &n_fds, 1000), -EMSGSIZE);
	assert_int_equal(n_fds, 0);
	assert_int_equal(open_fds(), base);

	/* More descriptors than the caller takes: -EBADMSG, none leak. */
	int three[3] = {efd, efd, efd};
	assert_int_equal(fdpass_send(sv[0], "m", 1, three, 3), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, 2, &n_fds, 1000), -EBADMSG);
	assert_int_equal(fds[0], -1);
	assert_int_equal(open_fds(), base);

	/* Control data cut short (more than our control buffer holds): -EBADMSG, none leak. */
	int lots[40];
	for (int i = 0; i < 40; i++)
		lots[i] = efd;
	union {
		char b[CMSG_SPACE(sizeof(lots))];
		struct cmsghdr a;
	} ctl;
	struct iovec iov = {.iov_base = "c", .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(lots));
	memcpy(CMSG_DATA(c), lots, sizeof(lots));
	assert_int_equal(sendmsg(sv[0], &msg, 0), 1);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, 2, &n_fds, 1000), -EBADMSG);
	assert_int_equal(open_fds(), base);

	/* Sender-side checks. */
	for (int i = 0; i <= FDPASS_MAX_FDS; i++)
		many[i] = efd;
	assert_int_equal(fdpass_send(sv[0], "m", 1, many, FDPASS_MAX_FDS + 1), -EINVAL);
	assert_int_equal(fdpass_send(sv[0], "m", 0, NULL, 0), -EINVAL);
	assert_int_equal(fdpass_send(sv[0], "m", 1, many, FDPASS_MAX_FDS), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), NULL, 0, NULL, 1000), -EBADMSG);
	assert_int_equal(open_fds(), base);

	/* Nothing to read: -ETIMEDOUT after about the timeout. */
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, 2, &n_fds, 30), -ETIMEDOUT);
	/* Peer gone: 0. */
	close(sv[0]);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, 2, &n_fds, 1000), 0);
	assert_int_equal(fdpass_send(sv[1], "m", 1, NULL, 0), -EPIPE);
	close(sv[1]);
	close(efd);
}

static void test_listen_connect(void **state)
{
	char path[108], buf[16];
	struct stat st;
	int l, c, a, fds[1], n_fds;

	snprintf(path, sizeof(path), "/tmp/test_fdpass.%d.sock", (int)getpid());
	unlink(path);
	l = fdpass_listen(path, 4, 0600);
	assert_true(l >= 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	c = fdpass_connect(path);
	assert_true(c >= 0);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(fdpass_send(c, "hi", 2, &c, 1), 0);
	assert_int_equal(fdpass_recv(a, buf, sizeof(buf), fds, 1, &n_fds, 1000), 2);
	assert_int_equal(n_fds, 1);
	close(fds[0]);
	close(a);
	close(c);
	/* A live listener is not replaced (the probe shows up as a connection that closes). */
	assert_int_equal(fdpass_listen(path, 4, 0600), -EADDRINUSE);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(fdpass_recv(a, buf, sizeof(buf), fds, 1, &n_fds, 1000), 0);
	close(a);
	close(l);

	/* The file of a dead listener is stale and gets replaced. */
	assert_int_equal(fdpass_connect(path), -ECONNREFUSED);
	l = fdpass_listen(path, 4, 0666);
	assert_true(l >= 0);
	close(l);
	unlink(path);

	/* A regular file at the path is not ours to remove. */
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(fdpass_listen(path, 4, 0600), -EEXIST);
	unlink(path);

	char longp[200];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(fdpass_listen(longp, 4, 0600), -ENAMETOOLONG);
	assert_int_equal(fdpass_connect(longp), -ENAMETOOLONG);
	assert_int_equal(fdpass_connect("/nonexistent/dir/x.sock"), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pass_and_use),
	    cmocka_unit_test(test_peercred),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_listen_connect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
