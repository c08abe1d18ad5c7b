"""A stand-in load balancer on a free loopback port for verify-deployment.sh.

Answers like the deployed ALB in front of healthy services: /api/health and
/ingest/health 200, /api/* and /ingest/* without credentials 401, anything
else the fixed 404. Prints its port, then serves until terminated.
"""

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


def main():
    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
