/*
 * LD_PRELOAD shim for the load tools (wrk, h2load): never offer a previous TLS session, so every
 * new connection is a full handshake. Without it, both tools resume (measured: h2load resumes
 * ~99 % of its reconnections, wrk ~50 %). The harness compiles it with `cc` and checks, against a
 * Node TLS server, that no handshake was resumed before it measures.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_set_session(SSL *s, SSL_SESSION *session) {
  static int (*real)(SSL *, SSL_SESSION *);
  if (!real) real = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
  (void)session;
  return real(s, 0);
}

/* wrk and h2load reuse one SSL object per connection slot; SSL_clear keeps its session. */
int SSL_clear(SSL *s) {
  static int (*real)(SSL *);
  static int (*set)(SSL *, SSL_SESSION *);
  if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
  if (!set) set = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
  set(s, 0);
  return real(s);
}
