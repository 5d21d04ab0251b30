/* fork_test: fork from a multi-threaded process while the other threads allocate; run under
 * libmemcg_preload.so with a limit by run_tests.sh (the plain build's preload/real_programs).
 *
 * Four threads malloc, realloc and free without pause while the main thread forks 40 times.
 * Each child, with only the forking thread alive, must not deadlock (an alarm kills it
 * otherwise) and must still be charged: it allocates 1 MiB blocks until malloc returns NULL with
 * errno ENOMEM (MEMCG_MAX holds it), frees them, allocates again (the charges came back), starts
 * a thread of its own that allocates too, and exits 0. Usage: fork_test LIMIT_MIB
 * Exit status 0 when every child passed; the parent prints one line per failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

int main(int argc, char** argv) {
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
