/* fork_test: fork from a multi-threaded process while the other threads allocate; run under
 * libmemcg_preload.so with a limit by run_tests.sh (the plain build's preload/real_programs).
 *
 * Four threads malloc, realloc and free without pause while the main thread forks 40 times.
 * Each child, with only the forking thread alive, must not deadlock (an alarm kills it
 * otherwise) and must still be charged: it allocates 1 MiB blocks until malloc returns NULL with
 * errno ENOMEM (MEMCG_MAX holds it), frees them, allocates again (the charges came back), starts
 * a thread of its own that allocates too, and exits 0. Usage: fork_test LIMIT_MIB
 * Exit status 0 when every child passed; the parent prints one line per failure.
 *
 * fork_test signals SECONDS: a signal handler that allocates (docs/slab.md, "Signal handlers").
 * SIGALRM 100 microseconds after the handler last returned (a one-shot timer the handler
 * re-arms: with a periodic one, a handler slower than the period, as its page faults and
 * mmaps are on some machines, would leave the main thread no time at all, and the test would
 * spin for ever) while the main thread mallocs, reallocs and frees a ring of
 * blocks (16 bytes to 1 MiB, each filled with its own byte and checked before it goes); the
 * handler mallocs 64 bytes, 3000 bytes and 200 KiB, fills and checks them, grows the first with
 * realloc, frees them, and frees a block the main thread handed over. Most signals land inside
 * the shim's entry points. Prints "ok: N signals" when no block changed under its owner and
 * every block was freed (run_tests.sh then compares memory.current with what is left). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { nr_threads = 4, nr_forks = 40, max_blocks = 4096 };

static atomic_int stop;

static void* churn(void* arg) {
  unsigned seed = (unsigned)(size_t)arg;
  void* keep[64] = {0};
  while (!atomic_load(&stop)) {
    seed = seed * 1103515245u + 12345u;
    unsigned i = (seed >> 8) % 64;
    size_t size = 16 + (seed >> 16) % 4000;
    if (keep[i] && (seed & 1)) {
      void* r = realloc(keep[i], size);
      if (r) keep[i] = r;
    } else {
      free(keep[i]);
      keep[i] = malloc(size);
    }
    if (keep[i]) memset(keep[i], (int)i, 16);
  }
  for (int i = 0; i < 64; ++i) free(keep[i]);
  return NULL;
}

static void* child_thread(void* arg) {
  (void)arg;
  for (int i = 0; i < 10000; ++i) {
    void* p = malloc(64 + (size_t)i % 512);
    if (!p) return (void*)1;
    memset(p, 1, 64);
    free(p);
  }
  return NULL;
}

/* The limit holds in the child: 1 MiB blocks until ENOMEM, somewhere below limit_mib. */
static int child(long limit_mib) {
  alarm(20); /* a deadlock in the child ends it with SIGALRM */
  static void* blocks[max_blocks];
  for (int round = 0; round < 2; ++round) {
    int n = 0;
    errno = 0;
    while (n < max_blocks) {
      void* p = malloc(1 << 20);
      if (!p) break;
      memset(p, 2, 4096);
      blocks[n++] = p;
    }
    if (n == max_blocks || errno != ENOMEM || n > limit_mib || n < limit_mib / 2) {
      fprintf(stderr, "child: round %d: %d MiB before refusal (errno %d), limit %ld MiB\n", round,
              n, errno, limit_mib);
      return 1;
    }
    for (int i = 0; i < n; ++i) free(blocks[i]);
  }
  pthread_t t;
  void* r = (void*)1;
  if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, &r) != 0 || r) {
    fprintf(stderr, "child: a new thread could not allocate\n");
    return 1;
  }
  return 0;
}

/* ---- fork_test signals SECONDS ---- */

static volatile long sig_runs, sig_bad;
static void* volatile handed; /* main -> handler */
static timer_t sig_timer;
static volatile sig_atomic_t sig_stop;

/* The next SIGALRM, 100 us from now (timer_settime is async-signal-safe). */
static void arm_alarm(void) {
  struct itimerspec next = {{0, 0}, {0, 100 * 1000}};
  if (!sig_stop) timer_settime(sig_timer, 0, &next, NULL);
}

static int fill_check(unsigned char* p, size_t n, unsigned char v) {
  memset(p, v, n);
  for (size_t i = 0; i < n; i += 97)
    if (p[i] != v) return 0;
  return p[n - 1] == v;
}

static void on_alarm(int sig) {
  (void)sig;
  int saved = errno;
  ++sig_runs;
  unsigned char* a = malloc(64);
  unsigned char* b = malloc(3000);
  unsigned char* c = malloc(200 << 10);
  if (a && !fill_check(a, 64, 0xa1)) ++sig_bad;
  if (b && !fill_check(b, 3000, 0xb2)) ++sig_bad;
  if (c && !fill_check(c, 200 << 10, 0xc3)) ++sig_bad;
  unsigned char* a2 = a ? realloc(a, 5000) : NULL;
  if (a2) {
    if (a2[63] != 0xa1) ++sig_bad;
    a = a2;
  }
  free(a);
  free(b);
  free(c);
  void* h = handed;
  if (h) {
    handed = NULL;
    free(h);
  }
  arm_alarm();
  errno = saved;
}

static int signals(double seconds) {
  enum { ring = 64 };
  static unsigned char* live[ring];
  static size_t size[ring];
  static unsigned char tag[ring];
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGALRM;
  if (timer_create(CLOCK_MONOTONIC, &ev, &sig_timer) != 0) {
    perror("timer_create");
    return 1;
  }
  arm_alarm();
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long bad = 0, iters = 0;
  unsigned seed = 7;
  for (;; ++iters) {
    if ((iters & 63) == 0) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > seconds) break;
    }
    seed = seed * 1103515245u + 12345u;
    unsigned i = (seed >> 8) % ring;
    size_t n = (seed >> 20) % 61 == 0 ? (size_t)1 << 20 : 16 + (seed >> 16) % 6000;
    if (live[i]) {
      if (live[i][0] != tag[i] || live[i][size[i] - 1] != tag[i]) ++bad;
    }
    if (live[i] && (seed & 1)) {
      unsigned char* r = realloc(live[i], n);
      if (!r) continue;
      if (r[0] != tag[i]) ++bad;
      live[i] = r;
    } else {
      free(live[i]);
      live[i] = malloc(n);
      if (!live[i]) continue;
    }
    size[i] = n;
    tag[i] = (unsigned char)(seed >> 24);
    memset(live[i], tag[i], n);
    if (!handed) handed = malloc(1000);
  }
  sig_stop = 1;
  timer_delete(sig_timer);  /* no SIGALRM after this: the handler re-arms no more */
  for (int i = 0; i < ring; ++i) {
    if (live[i] && (live[i][0] != tag[i] || live[i][size[i] - 1] != tag[i])) ++bad;
    free(live[i]);
  }
  free(handed);
  if (bad || sig_bad || sig_runs < 1000) {
    fprintf(stderr, "signals: %ld blocks changed under the main code, %ld under the handler, "
            "%ld signals\n", bad, (long)sig_bad, (long)sig_runs);
    return 1;
  }
  printf("ok: %ld signals, %ld iterations\n", (long)sig_runs, iters);
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 2 && strcmp(argv[1], "signals") == 0) return signals(atof(argv[2]));
  long limit_mib = argc > 1 ? atol(argv[1]) : 64;
  alarm(240);
  pthread_t ts[nr_threads];
  for (size_t i = 0; i < nr_threads; ++i) pthread_create(&ts[i], NULL, churn, (void*)(i + 1));
  int failures = 0;
  for (int f = 0; f < nr_forks; ++f) {
    usleep(2000);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      ++failures;
      continue;
    }
    if (pid == 0) _exit(child(limit_mib));
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      int sig = WIFSIGNALED(status);
      fprintf(stderr, "fork %d: child %s %d\n", f, sig ? "killed by signal" : "exit",
              sig ? WTERMSIG(status) : WEXITSTATUS(status));
      ++failures;
    }
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < nr_threads; ++i) pthread_join(ts[i], NULL);
  if (failures) return 1;
  printf("ok: %d forks\n", nr_forks);
  return 0;
}
