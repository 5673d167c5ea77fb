/*
** replay.c: runs the fuzz target over files, without libFuzzer (so that
** CI can replay the corpus with gcc and its sanitizers).
**
** Each file runs in a child process of its own, forked before this
** process ever ran loom, so that a crash, an abort or a leak report fails
** that file only and the others still run; a file that runs longer than
** REPLAY_TIMEOUT seconds (default 300) fails too. Prints "N passed, N
** failed".
** REPLAY_INPROCESS=1 runs the files in this process instead (for a
** debugger).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 4096, n = 0;
  unsigned char *buf = (unsigned char *)malloc(cap);
  for (;;) {
    if (buf == NULL) break;
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    unsigned char *nb = (unsigned char *)realloc(buf, cap * 2);
    if (nb == NULL) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  int inprocess = getenv("REPLAY_INPROCESS") != NULL;
  const char *limit = getenv("REPLAY_TIMEOUT");
  unsigned timeout = limit ? (unsigned)atoi(limit) : 300;
  for (int i = 1; i < argc; i++) {
    size_t len = 0;
    unsigned char *data = read_file(argv[i], &len);
    if (data == NULL) {
      fprintf(stderr, "replay: cannot read %s\n", argv[i]);
      failed++;
      continue;
    }
    if (inprocess) {
      LLVMFuzzerTestOneInput(data, len);
      free(data);
      passed++;
      continue;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
      alarm(timeout);
      LLVMFuzzerTestOneInput(data, len);
      free(data);
      exit(0); /* exit, not _exit: LeakSanitizer reports at exit */
    }
    free(data);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
      fprintf(stderr, "replay: cannot run %s\n", argv[i]);
      failed++;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      passed++;
    } else {
      if (WIFSIGNALED(status))
        fprintf(stderr, "replay: FAILED %s (signal %d)\n", argv[i], WTERMSIG(status));
      else
        fprintf(stderr, "replay: FAILED %s (exit %d)\n", argv[i], WEXITSTATUS(status));
      failed++;
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
