"""Interop: slixmpp connects to ldmd over STARTTLS, authenticates with SASL PLAIN, binds a
resource and pings the server (XEP-0199). Exits 0 on success, 1 with a reason otherwise.

usage: slixmpp_ping.py HOST PORT JID PASSWORD CA_FILE
"""

import asyncio
import logging
import ssl
import sys

import slixmpp


class Pinger(slixmpp.ClientXMPP):
    def __init__(self, jid, password, ca_file):
        super().__init__(jid, password)
        self.register_plugin("xep_0199")
        self.ssl_context = ssl.create_default_context(cafile=ca_file)
        self.ssl_context.check_hostname = False  # the certificate names the XMPP domain
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.outcome = "session never started"
        self.bound_jid = None
        self.add_event_handler("session_start", self.on_session)
        self.add_event_handler("failed_auth", lambda _: self.finish("authentication failed"))

    async def on_session(self, _event):
        self.bound_jid = str(self.boundjid)
        try:
            rtt = await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=5)
            self.outcome = f"ok rtt={rtt:.4f}s"
        except Exception as exc:  # any failure is the answer
            self.outcome = f"ping failed: {exc!r}"
        self.disconnect()

    def finish(self, outcome):
        self.outcome = outcome
        self.disconnect()


async def main():
    host, port, jid, password, ca_file = sys.argv[1:6]
    client = Pinger(jid, password, ca_file)
    client.connect(host=host, port=int(port))
    try:
        await asyncio.wait_for(client.disconnected, timeout=20)
    except asyncio.TimeoutError:
        client.outcome = "timed out"
    print(f"bound={client.bound_jid} outcome={client.outcome}")
    return 0 if client.outcome.startswith("ok") and client.bound_jid else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main()))
