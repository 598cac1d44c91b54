"""The illumos FMA LDM client (libldom, ldom_xmpp_client.c), re-enacted byte for byte.

What it does, and how faithfully this re-enacts it:
- plain TCP to the daemon; sends STREAM_START exactly as the C string;
- reads at most XMPP_BUF_SIZE (1024) bytes per read() and parses EACH READ AS A FRESH DOCUMENT
  with a non-namespace SAX parser (libxml2 SAX1 there, expat without namespace processing
  here), reacting to end-element names compared raw ("stream:features", "starttls",
  "proceed", "LDM_interface", "failure"); any parse error is a failure;
- on </starttls> sends START_TLS; on </proceed> runs a TLS handshake WITHOUT verifying the
  certificate (OpenSSL, as there) and resends STREAM_START; on </stream:features> after TLS
  sends LDM_REG_DOMAIN_EVENTS; on </LDM_interface> parses the read as a document and checks
  cmd/action and cmd/response/status like handle_ldm_resp().

Prints one JSON object: every read as text, and the outcome. usage: fma_client.py PORT
"""

import json
import socket
import ssl
import sys
import xml.dom.minidom
import xml.parsers.expat

XMPP_BUF_SIZE = 1024
STREAM_START = b"<?xml version='1.0'?><stream:stream xml:lang=\"en\" version=\"1.0\" id=\"xmpp\">"
START_TLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
LDM_REG_DOMAIN_EVENTS = (
    b'<LDM_interface version="1.1">'
    b"   <cmd>"
    b"      <action>reg-domain-events</action>"
    b'      <data version="3.0"> </data>'
    b"   </cmd>"
    b"</LDM_interface>"
)


def end_elements(chunk):
    """End-element names of one read parsed alone, or raises on a parse error (the C client
    sets CONN_STATE_FAILURE when xmlParseChunk returns an error)."""
    names = []
    parser = xml.parsers.expat.ParserCreate()  # no namespace processing: raw qualified names
    parser.EndElementHandler = names.append
    parser.Parse(chunk, False)  # not final: an unclosed stream:stream root is fine
    return names


def child(node, name):
    for sub in node.childNodes:
        if sub.nodeType == sub.ELEMENT_NODE and sub.tagName == name:
            return sub
    return None


def handle_ldm_resp(chunk):
    """handle_ldm_resp(): the read must be a whole document; returns (action, cmd status)."""
    root = xml.dom.minidom.parseString(chunk).documentElement
    cmd = child(root, "cmd")
    action = child(cmd, "action").firstChild.data
    status = child(child(cmd, "response"), "status").firstChild.data
    return action, status


def handle_ldm_event(chunk):
    """handle_ldm_event(): the read must be one whole LDM_event; returns (action, domain), the
    domain read with xmlGetProp(content, "id") from cmd/data/Envelope/Content."""
    root = xml.dom.minidom.parseString(chunk).documentElement
    assert root.tagName == "LDM_event", root.tagName
    cmd = child(root, "cmd")
    action = child(cmd, "action").firstChild.data
    content = child(child(child(cmd, "data"), "Envelope"), "Content")
    return action, content.getAttribute("id")


def main():
    port = int(sys.argv[1])
    # With a count, stay subscribed after the reply and read that many events; "registered"
    # on stdout tells the test when to make the changes.
    events_wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    transcript = {"reads": [], "outcome": None, "events": []}
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = sock
    tls = False
    conn.sendall(STREAM_START)
    try:
        while True:
            buf = conn.recv(XMPP_BUF_SIZE)
            if not buf:
                transcript["outcome"] = "closed by server"
                break
            transcript["reads"].append(buf.decode("utf-8"))
            names = end_elements(buf)
            if "starttls" in names:
                conn.sendall(START_TLS)
            if "proceed" in names:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                conn = ctx.wrap_socket(sock)
                tls = True
                transcript["tls"] = conn.version()
                conn.sendall(STREAM_START)
                continue
            if "stream:features" in names and tls:
                conn.sendall(LDM_REG_DOMAIN_EVENTS)
            if "LDM_interface" in names:
                action, status = handle_ldm_resp(buf)
                transcript["outcome"] = f"response action={action} status={status}"
                if events_wanted == 0:
                    break
                print("registered", flush=True)
            if "LDM_event" in names:
                transcript["events"].append(list(handle_ldm_event(buf)))
                if len(transcript["events"]) == events_wanted:
                    break
            if "failure" in names:
                transcript["outcome"] = "failure element"
                break
    except Exception as exc:
        transcript["outcome"] = f"error: {exc!r}"
    print(json.dumps(transcript))


if __name__ == "__main__":
    main()
