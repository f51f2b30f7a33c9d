/* A libfcgi responder as libfcgi's examples write one: FCGX_Accept_r on
 * the listening socket the manager passes as fd 0 (FCGI_LISTENSOCK_FILENO).
 * Its body names the library, the process and herd's generation; `?ms=N`
 * sleeps N ms first (a signal does not cut the sleep short).
 * Build: gcc -o libfcgi_app libfcgi_app.c -lfcgi */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcgiapp.h>

static void sleep_ms(long ms)
{
    struct timespec left = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&left, &left) < 0 && errno == EINTR) {
    }
}

int main(void)
{
    FCGX_Request req;
    FCGX_Init();
    FCGX_InitRequest(&req, 0, 0);
    while (FCGX_Accept_r(&req) >= 0) {
        const char *query = FCGX_GetParam("QUERY_STRING", req.envp);
        const char *ms = query ? strstr(query, "ms=") : NULL;
        const char *gen = getenv("HERD_GENERATION");
        if (ms && (ms == query || ms[-1] == '&'))
            sleep_ms(atol(ms + 3));
        FCGX_FPrintF(req.out, "Content-Type: text/plain\r\n\r\nlib=libfcgi pid=%d gen=%s",
                     (int)getpid(), gen ? gen : "");
        FCGX_Finish_r(&req);
    }
    return 0;
}
