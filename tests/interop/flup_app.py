"""A WSGI application on flup, started as flup's documentation says:
WSGIServer(app).run() with no bindAddress serves the listening socket the
manager passes as fd 0. `flup_app.py` runs flup's threaded server,
`flup_app.py fork` its preforking one. The body names the library, the
process and herd's generation; `?ms=N` sleeps N ms first."""

import os
import sys
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    ms = parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["0"])[0]
    if ms.isdigit():
        end = time.monotonic() + int(ms) / 1000
        while time.monotonic() < end:
            time.sleep(end - time.monotonic())
    start_response("200 OK", [("Content-Type", "text/plain")])
    body = "lib=flup pid=%d gen=%s" % (os.getpid(), os.environ.get("HERD_GENERATION", ""))
    return [body.encode()]


if __name__ == "__main__":
    if sys.argv[1:] == ["fork"]:
        from flup.server.fcgi_fork import WSGIServer
    else:
        from flup.server.fcgi import WSGIServer
    WSGIServer(app).run()
