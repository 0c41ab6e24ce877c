"""The SMTP server of `email_delivery`, in a process of its own: `python -m caseloom.bench.smtpd PORT`
listens on 127.0.0.1:PORT (aiosmtpd), accepts every message and counts them. It prints "ready" once
listening, then the count for every line it reads on its standard input, and stops at its end.

Apart from the bench, neither the figure nor the baseline shares an interpreter (and its lock) with the
server: in the bench's own process, smtplib and the server took turns on one core."""

from __future__ import annotations

import sys


class Counter:
    """An aiosmtpd handler that accepts every message and only counts them."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages += 1
        return "250 OK"


def main(port: int) -> None:
    from aiosmtpd.controller import Controller

    counter = Counter()
    server = Controller(counter, hostname="127.0.0.1", port=port)
    server.start()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(counter.messages, flush=True)
    server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
