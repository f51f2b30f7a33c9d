// A responder on Go's standard library, as its documentation writes one:
// fcgi.Serve with no listener serves the socket the manager passes as fd 0
// (FCGI_LISTENSOCK_FILENO), each request in a goroutine of its own. Its
// body names the library, the process and herd's generation; `?ms=N`
// sleeps N ms first.
// Build: go build -o go_fcgi_app go_fcgi_app.go
package main

import (
	"fmt"
	"net/http"
	"net/http/fcgi"
	"os"
	"strconv"
	"time"
)

func main() {
	gen := os.Getenv("HERD_GENERATION")
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "lib=go pid=%d gen=%s", os.Getpid(), gen)
	})
	if err := fcgi.Serve(nil, app); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
