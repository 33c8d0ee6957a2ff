/* TCP connect/request/response/close, one connection at a time per worker (netperf's TCP_CRR), for
 * bench/crr_bench.py, which compiles it.
 *
 *   crr server PORT PORTS WORKERS      on PORT .. PORT+PORTS-1: accept; read 1 byte; write 1 byte; close
 *                                      (WORKERS processes per port)
 *   crr client HOST PORT SECONDS WORKERS
 *       each worker: connect, write 1 byte, read 1 byte, close, again, until SECONDS are over; prints
 *       {"connections": N, "errors": E, "seconds": S} (the sum over workers).
 *
 * The client closes with SO_LINGER 0 (a RST, no TIME_WAIT): a few tens of thousands of connections a run
 * would otherwise exhaust the ephemeral ports. Bounded: the client stops after SECONDS, and each connection
 * step after a 2 s timeout (counted as an error). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int serve(int first, int ports, int workers)
{
	int one = 1, port = first;
	for (int i = 1; i < ports; i++)
		if (fork() == 0) {
			port = first + i;
			break;
		}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1024) < 0) {
		perror("crr server");
		return 1;
	}
	for (int i = 1; i < workers; i++)
		if (fork() == 0)
			break;
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char b;
		if (read(c, &b, 1) == 1)
			(void)!write(c, &b, 1);
		close(c);
	}
}

static void client_worker(const char *host, int port, double until, int out)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, host, &addr.sin_addr);
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct timeval tv = {.tv_sec = 2};
	int one = 1;
	long done = 0, errors = 0;
	while (now() < until) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char b = 'x';
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 && write(fd, &b, 1) == 1 && read(fd, &b, 1) == 1)
			done++;
		else
			errors++;
		close(fd);
	}
	long result[2] = {done, errors};
	(void)!write(out, result, sizeof(result));
}

static int client(const char *host, int port, double seconds, int workers)
{
	int fds[2];
	if (pipe(fds) < 0)
		return 1;
	double start = now(), until = start + seconds;
	for (int i = 0; i < workers; i++) {
		if (fork() == 0) {
			client_worker(host, port, until, fds[1]);
			_exit(0);
		}
	}
	long done = 0, errors = 0;
	for (int i = 0; i < workers; i++) {
		long result[2];
		if (read(fds[0], result, sizeof(result)) == sizeof(result)) {
			done += result[0];
			errors += result[1];
		}
	}
	while (wait(NULL) > 0)
		;
	printf("{\"connections\": %ld, \"errors\": %ld, \"seconds\": %.3f}\n", done, errors, now() - start);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 5 && strcmp(argv[1], "server") == 0)
		return serve(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	if (argc == 6 && strcmp(argv[1], "client") == 0)
		return client(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: crr server PORT PORTS WORKERS | crr client HOST PORT SECONDS WORKERS\n");
	return 2;
}
