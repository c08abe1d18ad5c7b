"""A stand-in load balancer on free loopback ports for verify-deployment.sh.

Answers like the deployed ALB in front of healthy services: /api/health and
/ingest/health 200, /api/* and /ingest/* without credentials 401, anything
else the fixed 404. Prints its port, then serves until terminated.

With `--tls CERT KEY` it serves HTTPS with that certificate, as the ALB's 443
listener does, and a second port answers plain HTTP with a 301 to the same
path on https://localhost:<tls port> (the port 80 listener); it prints both
ports, HTTPS first.
"""

import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path in ("/api/health", "/ingest/health"):
            status = 200
        elif self.path.startswith(("/api/", "/ingest/")):
            status = 401
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def redirect_to(tls_port):
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(301)
            self.send_header("Location", f"https://localhost:{tls_port}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    return Redirect


def main():
    server = HTTPServer(("127.0.0.1", 0), Handler)
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
        tls_port = server.server_address[1]
        plain = HTTPServer(("127.0.0.1", 0), redirect_to(tls_port))
        threading.Thread(target=plain.serve_forever, daemon=True).start()
        print(tls_port, flush=True)
        print(plain.server_address[1], flush=True)
    else:
        print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
