/*
 * floor.c: the C floor for ngxlab's benchmarks (ngxlab.lab.cost, ngxlab.lab.fdpass).
 *
 * Our own small program, not nginx code. It does in C exactly what the Python
 * variants of the benchmark do, so that the ratio Python / C shows what the
 * interpreter costs on top of the same system calls:
 *
 *   floor rt COUNT BATCH WARMUP WITH_FD [PARENT_CPU CHILD_CPU]
 *       Round trips of one 32-byte message between this process and a forked
 *       child over an AF_UNIX/SOCK_STREAM socketpair made non-blocking (as
 *       nginx makes its channels). Each side waits with poll() before every
 *       recvmsg(). With WITH_FD = 1 every message carries one SCM_RIGHTS
 *       descriptor (/dev/null) in each direction; the receiver closes it.
 *       Prints {"mode": "rt", ..., "samples_ns": [...]}: the mean time of one
 *       round trip in each batch of BATCH, after WARMUP unmeasured ones.
 *
 *   floor fds PER_MESSAGE SECONDS INTERVAL [PARENT_CPU CHILD_CPU]
 *       Descriptors passed per second in one direction: the forked child
 *       sends 32-byte messages, each carrying PER_MESSAGE copies of one
 *       descriptor in a single SCM_RIGHTS message; this process receives them
 *       and closes every descriptor it gets. Blocking sockets. Flow control:
 *       the receiver acknowledges every ACK_EVERY messages with one byte and
 *       the sender keeps at most WINDOW messages unacknowledged, so the
 *       descriptors in flight stay under the sender's RLIMIT_NOFILE (Linux
 *       refuses more with ETOOMANYREFS). The first min(2 * WINDOW, 1000)
 *       messages are a warm-up, not measured: the sender filled the socket's
 *       buffer before the receiver began.
 *       Prints {"mode": "fds", ...,
 *       "samples_per_s": [...]}: descriptors per second in each INTERVAL.
 *
 *   floor fork COUNT
 *       COUNT times: fork(), the child calls _exit(0) at once, this process
 *       waits for it with waitpid(). Prints {"mode": "fork", "count": COUNT,
 *       "mean_ns": ...}: the mean time of one fork, exit and reap.
 *
 * PARENT_CPU and CHILD_CPU pin this process and its child to one CPU each
 * (sched_setaffinity; -1 or absent: the scheduler decides), as ngxlab.lab.cost
 * pins its Python variants.
 *
 * Build: cc -O2 -o floor floor.c   (ngxlab builds it at run time).
 * Exit status: 0, or 2 after printing "floor: what: strerror" on stderr.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define MAX_FDS 253          /* SCM_MAX_FD in the Linux kernel */
#define MESSAGE_SIZE 32

/* The same 32 bytes as ngxlab's ngx_channel_t on LP64. */
struct message {
    uint64_t command;
    int32_t  pid;
    int64_t  slot;
    int32_t  fd;
};

_Static_assert(sizeof(struct message) == MESSAGE_SIZE, "message is 32 bytes");

union control {
    struct cmsghdr header;
    char           space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
};

static void
fail(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
die_with_parent(pid_t parent)
{
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
#endif
    if (getppid() != parent) {
        _exit(1);
    }
}

/* sendmsg() of len bytes with nfds descriptors (0: no control message). */
static ssize_t
send_with_fds(int s, const void *buf, size_t len, const int *fds, int nfds)
{
    struct iovec    iov;
    struct msghdr   msg;
    union control   control;
    struct cmsghdr *cmsg;
    ssize_t         n;

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = (void *) buf;
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;

    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }

    do {
        n = sendmsg(s, &msg, MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);

    return n;
}

/* recvmsg() of up to len bytes; the descriptors received go to fds. */
static ssize_t
recv_with_fds(int s, void *buf, size_t len, int *fds, int maxfds, int *nfds)
{
    struct iovec    iov;
    struct msghdr   msg;
    union control   control;
    struct cmsghdr *cmsg;
    ssize_t         n;
    int             count;

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = buf;
    iov.iov_len = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * maxfds);

    do {
        n = recvmsg(s, &msg, 0);
    } while (n == -1 && errno == EINTR);

    *nfds = 0;
    if (n <= 0) {
        return n;
    }

    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds + *nfds, CMSG_DATA(cmsg), sizeof(int) * count);
            *nfds += count;
        }
    }

    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        errno = EMSGSIZE;
        return -1;
    }

    return n;
}

/* Run on one CPU only (-1: wherever the scheduler likes). */
static void
pin(int cpu)
{
    cpu_set_t set;

    if (cpu < 0) {
        return;
    }
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) == -1) {
        fail("sched_setaffinity()");
    }
}

static void
wait_readable(int s)
{
    struct pollfd pfd;

    pfd.fd = s;
    pfd.events = POLLIN;
    while (poll(&pfd, 1, -1) == -1) {
        if (errno != EINTR) {
            fail("poll()");
        }
    }
}

static void
set_nonblocking(int s)
{
    int on = 1;

    if (ioctl(s, FIONBIO, &on) == -1) {
        fail("ioctl(FIONBIO)");
    }
}

static void
close_all(const int *fds, int nfds)
{
    int i;

    for (i = 0; i < nfds; i++) {
        close(fds[i]);
    }
}

/* -- round trips ---------------------------------------------------------- */

static void
echo(int s)
{
    struct message m;
    ssize_t        n;
    int            fds[MAX_FDS], nfds;

    for ( ;; ) {
        wait_readable(s);
        n = recv_with_fds(s, &m, sizeof(m), fds, 1, &nfds);
        if (n == 0) {
            return;                               /* the parent closed */
        }
        if (n == -1) {
            if (errno == EAGAIN) {
                continue;
            }
            fail("recvmsg() in the child");
        }
        if (send_with_fds(s, &m, n, fds, nfds) == -1) {
            fail("sendmsg() in the child");
        }
        close_all(fds, nfds);
    }
}

static void
one_round_trip(int s, const struct message *out, int devnull, int with_fd)
{
    struct message back;
    ssize_t        n;
    int            fds[MAX_FDS], nfds;

    if (send_with_fds(s, out, sizeof(*out), &devnull, with_fd) == -1) {
        fail("sendmsg()");
    }
    for ( ;; ) {
        wait_readable(s);
        n = recv_with_fds(s, &back, sizeof(back), fds, 1, &nfds);
        if (n == -1 && errno == EAGAIN) {
            continue;
        }
        break;
    }
    if (n == -1) {
        fail("recvmsg()");
    }
    if (n != sizeof(back)) {
        fprintf(stderr, "floor: recvmsg() returned %zd bytes\n", n);
        exit(2);
    }
    close_all(fds, nfds);
}

/* Forks the peer of a measurement: the parent keeps sv[0] and runs on
 * parent_cpu, the child keeps sv[1], runs on child_cpu, dies with its parent
 * and runs body(sv[1], arg) until it returns. Returns the child's pid. */
static pid_t
fork_peer(int sv[2], int parent_cpu, int child_cpu, void (*body)(int, int), int arg)
{
    pid_t  pid, parent;

    pin(parent_cpu);
    parent = getpid();
    fflush(stdout);
    pid = fork();
    if (pid == -1) {
        fail("fork()");
    }
    if (pid == 0) {
        die_with_parent(parent);
        pin(child_cpu);
        close(sv[0]);
        body(sv[1], arg);
        _exit(0);
    }
    close(sv[1]);
    return pid;
}

/* echo() as a peer's body: it takes no argument. */
static void
echo_peer(int s, int unused)
{
    (void) unused;
    echo(s);
}

static int
round_trips(long count, long batch, long warmup, int with_fd, int parent_cpu, int child_cpu)
{
    int            sv[2], devnull, status;
    long           i, b, batches;
    pid_t          pid, parent;
    int64_t        t0;
    double        *samples;
    struct message out;

    if (batch < 1 || count < batch) {
        fprintf(stderr, "floor: need COUNT >= BATCH >= 1\n");
        return 2;
    }
    batches = count / batch;
    samples = calloc(batches, sizeof(double));
    if (samples == NULL) {
        fail("calloc()");
    }

    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull == -1) {
        fail("open(/dev/null)");
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1) {
        fail("socketpair()");
    }
    set_nonblocking(sv[0]);
    set_nonblocking(sv[1]);

    parent = getpid();
    pid = fork_peer(sv, parent_cpu, child_cpu, echo_peer, 0);

    memset(&out, 0, sizeof(out));
    out.command = with_fd ? 1 : 5;      /* OPEN_CHANNEL with a descriptor, else REOPEN */
    out.pid = (int32_t) parent;
    out.slot = 0;
    out.fd = with_fd ? devnull : -1;

    for (i = 0; i < warmup; i++) {
        one_round_trip(sv[0], &out, devnull, with_fd);
    }
    for (b = 0; b < batches; b++) {
        t0 = now_ns();
        for (i = 0; i < batch; i++) {
            one_round_trip(sv[0], &out, devnull, with_fd);
        }
        samples[b] = (double) (now_ns() - t0) / batch;
    }

    close(sv[0]);
    if (waitpid(pid, &status, 0) == -1) {
        fail("waitpid()");
    }
    close(devnull);

    printf("{\"mode\": \"rt\", \"with_fd\": %d, \"count\": %ld, \"batch\": %ld, "
           "\"warmup\": %ld, \"child_status\": %d, \"samples_ns\": [",
           with_fd, batches * batch, batch, warmup, status);
    for (b = 0; b < batches; b++) {
        printf("%s%.1f", b ? ", " : "", samples[b]);
    }
    printf("]}\n");
    free(samples);
    return 0;
}

/* -- descriptors per second ------------------------------------------------ */

/* The same window as ngxlab.lab.bench: at most min(16384, NOFILE / 2)
 * descriptors in flight, in whole messages, at least two messages, where
 * NOFILE is the soft limit after raising it to min(hard limit, 65536). */
static void
window(int per_message, long *window_messages, long *ack_every)
{
    struct rlimit rl;
    rlim_t        want, budget;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        want = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
        if (rl.rlim_cur < want) {
            rl.rlim_cur = want;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        budget = rl.rlim_cur / 2;
    } else {
        budget = 512;
    }
    if (budget > 16384) {
        budget = 16384;
    }
    *window_messages = (long) budget / per_message;
    if (*window_messages < 2) {
        *window_messages = 2;
    }
    *ack_every = *window_messages / 4;
    if (*ack_every < 1) {
        *ack_every = 1;
    }
}

static void
send_forever(int s, int per_message)
{
    struct message m;
    int            fds[MAX_FDS], i, devnull;
    long           sent, acked, window_messages, ack_every;
    ssize_t        n;
    char           acks[64];

    window(per_message, &window_messages, &ack_every);
    devnull = open("/dev/null", O_RDONLY);
    if (devnull == -1) {
        fail("open(/dev/null)");
    }
    for (i = 0; i < per_message; i++) {
        fds[i] = devnull;
    }
    memset(&m, 0, sizeof(m));
    m.command = 1;
    m.fd = devnull;

    sent = 0;
    acked = 0;
    for ( ;; ) {
        while (sent - acked * ack_every >= window_messages) {
            n = read(s, acks, sizeof(acks));
            if (n <= 0) {
                return;                          /* the receiver is done */
            }
            acked += n;
        }
        if (send_with_fds(s, &m, sizeof(m), fds, per_message) == -1) {
            if (errno == EPIPE || errno == ECONNRESET) {
                return;
            }
            fail("sendmsg() in the sender");
        }
        sent++;
    }
}

static int
fds_per_second(int per_message, double seconds, double interval, int parent_cpu, int child_cpu)
{
    int            sv[2], fds[MAX_FDS], nfds, status, first;
    long           messages, warmup, window_messages, ack_every;
    long long      total, in_interval;
    pid_t          pid;
    int64_t        start, t, last, end, step;
    ssize_t        n;
    struct message m;

    if (per_message < 1 || per_message > MAX_FDS || seconds <= 0 || interval <= 0) {
        fprintf(stderr, "floor: need 1 <= PER_MESSAGE <= %d, SECONDS > 0, INTERVAL > 0\n",
                MAX_FDS);
        return 2;
    }
    window(per_message, &window_messages, &ack_every);

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1) {
        fail("socketpair()");
    }
    pid = fork_peer(sv, parent_cpu, child_cpu, send_forever, per_message);

    printf("{\"mode\": \"fds\", \"per_message\": %d, \"window_messages\": %ld, "
           "\"ack_every\": %ld, \"samples_per_s\": [", per_message, window_messages, ack_every);

    /* The warm-up, not measured (see the top of this file). */
    warmup = 2 * window_messages < 1000 ? 2 * window_messages : 1000;
    for (messages = 0; messages < warmup; messages++) {
        n = recv_with_fds(sv[0], &m, sizeof(m), fds, MAX_FDS, &nfds);
        if (n <= 0) {
            if (n == 0) {
                errno = EPIPE;
            }
            fail("recvmsg() in the receiver");
        }
        close_all(fds, nfds);
        if ((messages + 1) % ack_every == 0) {
            if (write(sv[0], "a", 1) != 1) {
                fail("write() of an acknowledgement");
            }
        }
    }

    step = (int64_t) (interval * 1e9);
    total = 0;
    in_interval = 0;
    first = 1;
    start = now_ns();
    last = start;
    end = start + (int64_t) (seconds * 1e9);

    for ( ;; ) {
        n = recv_with_fds(sv[0], &m, sizeof(m), fds, MAX_FDS, &nfds);
        if (n <= 0) {
            if (n == 0) {
                errno = EPIPE;
            }
            fail("recvmsg() in the receiver");
        }
        close_all(fds, nfds);
        total += nfds;
        in_interval += nfds;
        if (++messages % ack_every == 0) {
            if (write(sv[0], "a", 1) != 1) {
                fail("write() of an acknowledgement");
            }
        }
        t = now_ns();
        if (t - last >= step) {
            printf("%s%.1f", first ? "" : ", ", in_interval * 1e9 / (double) (t - last));
            first = 0;
            in_interval = 0;
            last = t;
        }
        if (t >= end) {
            break;
        }
    }

    if (first) {
        /* SECONDS shorter than INTERVAL: one sample for the whole run */
        printf("%.1f", total * 1e9 / (double) (t - start));
    }

    close(sv[0]);
    if (waitpid(pid, &status, 0) == -1) {
        fail("waitpid()");
    }
    printf("], \"fds\": %lld, \"messages\": %ld, \"elapsed_s\": %.6f, \"child_status\": %d}\n",
           total, messages - warmup, (t - start) / 1e9, status);
    return 0;
}

static int
forks(long count)
{
    int64_t t0 = now_ns();
    pid_t pid;
    int status;

    for (long i = 0; i < count; i++) {
        pid = fork();
        if (pid == -1) {
            fail("fork");
        }
        if (pid == 0) {
            _exit(0);
        }
        if (waitpid(pid, &status, 0) != pid) {
            fail("waitpid");
        }
    }
    printf("{\"mode\": \"fork\", \"count\": %ld, \"mean_ns\": %.1f}\n", count,
           (double) (now_ns() - t0) / (double) (count > 0 ? count : 1));
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "fork") == 0) {
        return forks(atol(argv[2]));
    }
    if ((argc == 6 || argc == 8) && strcmp(argv[1], "rt") == 0) {
        return round_trips(atol(argv[2]), atol(argv[3]), atol(argv[4]), atoi(argv[5]) != 0,
                           argc == 8 ? atoi(argv[6]) : -1, argc == 8 ? atoi(argv[7]) : -1);
    }
    if ((argc == 5 || argc == 7) && strcmp(argv[1], "fds") == 0) {
        return fds_per_second(atoi(argv[2]), atof(argv[3]), atof(argv[4]),
                              argc == 7 ? atoi(argv[5]) : -1, argc == 7 ? atoi(argv[6]) : -1);
    }
    fprintf(stderr,
            "usage: floor rt COUNT BATCH WARMUP WITH_FD [PARENT_CPU CHILD_CPU]\n"
            "       floor fds PER_MESSAGE SECONDS INTERVAL [PARENT_CPU CHILD_CPU]\n"
            "       floor fork COUNT\n");
    return 2;
}
